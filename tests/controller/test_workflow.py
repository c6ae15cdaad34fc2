"""People working tickets: transitions, assignment, report stages, false positives and exceptions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.errors import UsageError
from controller.domain import audit, exceptions, tickets, workflow
from controller.domain.tickets import INITIAL_REPORT_WINDOW, RuleRef, apply_outcomes
from controller.domain.users import create_user
from controller.errors import Conflict, Forbidden
from controller.judges.base import Observation
from controller.storage.models import Agent, Finding, OutboxMessage, Ticket, TicketEvent, User
from tests.controller._db import migrated_sessions

T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
ASSET = "agt-1"
PORTS = RuleRef("PORTS-ALLOWED", "ports", "high", ("TPEx-CPA 3(10)5",), "tw-securities-linux", 3)
SUBJECT = "tcp/0.0.0.0:6379"
PASSWORD = "Correct-Horse-42-battery"


def rfc(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(url=db_url) as factory:
        with factory.begin() as s:
            for name in ("viewer", "analyst", "admin"):
                create_user(s, name, name, PASSWORD, "test")
            create_user(s, "bob", "analyst", PASSWORD, "test")
            s.add(Agent(id=ASSET, hostname="web-01", enrolled_at=T0, cert_serial="1", cert_not_after=T0,
                        tags=["linux", "web"], status="online", max_sequence=0))
        yield factory


def fail_at(sessions: sessionmaker[Session], at: dt.datetime, subject: str = SUBJECT) -> list[int]:
    with sessions.begin() as s:
        out = apply_outcomes(s, ASSET, "web-01", PORTS, [Observation(subject, "fail", f"{subject} is not allowed",
                                                                 {"proto": "tcp", "address": "0.0.0.0", "port": 6379,
                                                                  "process": "redis-server", "owner_known": True})],
                             at, None)
        return [t.id for t in out]


def user(s: Session, name: str) -> User:
    u = s.get(User, name)
    assert u is not None
    return u


def test_a_ticket_is_worked_to_closed_with_every_step_on_the_timeline_and_in_the_audit_log(sessions) -> None:
    (tid,) = fail_at(sessions, T0)
    with sessions.begin() as s:
        workflow.assign(s, tid, "bob", user(s, "analyst"), now=T0 + dt.timedelta(minutes=1))
        workflow.transition(s, tid, "acknowledged", user(s, "bob"), now=T0 + dt.timedelta(minutes=2))
        workflow.file_report(s, tid, "initial", "redis exposed on web-01", user(s, "bob"),
                             now=T0 + dt.timedelta(minutes=5))
        workflow.transition(s, tid, "in_progress", user(s, "bob"), now=T0 + dt.timedelta(minutes=6))
        workflow.comment(s, tid, "firewalled, stopping redis", user(s, "bob"), now=T0 + dt.timedelta(minutes=7))
        workflow.file_report(s, tid, "formal", "root cause: test instance left running", user(s, "bob"),
                             now=T0 + dt.timedelta(minutes=20))
        workflow.transition(s, tid, "resolved", user(s, "bob"), "redis removed", now=T0 + dt.timedelta(minutes=30))
        workflow.file_report(s, tid, "closure", "verified by rescan", user(s, "bob"),
                             now=T0 + dt.timedelta(minutes=31))
        workflow.transition(s, tid, "closed", user(s, "analyst"), now=T0 + dt.timedelta(minutes=32))
    with sessions() as s:
        detail = workflow.ticket_detail(s, workflow.get_ticket(s, tid))
        assert detail["status"] == "closed" and detail["assignee"] == "bob"
        assert [e["kind"] for e in detail["timeline"]] == [
            "opened", "assigned", "transition", "report", "transition", "comment", "report", "transition", "report",
            "transition"]
        assert [(r["stage"], r["filed_by"]) for r in detail["reports"]] == [
            ("initial", "bob"), ("formal", "bob"), ("closure", "bob")]
        assert detail["next_report"] is None and detail["allowed_transitions"] == ["open"]
        actions = [e.action for e in audit.iter_entries(s) if e.object_type == "ticket"]
        assert actions.count("ticket.transition") == 4 and "ticket.assign" in actions
        assert actions.count("ticket.report") == 3 and "ticket.comment" in actions
        assert audit.verify(s).ok
        # Every timeline entry was queued for notification in the same transaction.
        kinds = [m.kind for m in s.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars()]
        assert kinds == [e["kind"] for e in detail["timeline"]]


def test_roles_and_illegal_moves_are_refused_with_a_reason(sessions) -> None:
    (tid,) = fail_at(sessions, T0)
    with sessions.begin() as s:
        with pytest.raises(Forbidden, match="analyst role; viewer is viewer"):
            workflow.transition(s, tid, "acknowledged", user(s, "viewer"))
        with pytest.raises(Forbidden):
            workflow.comment(s, tid, "hi", user(s, "viewer"))
        with pytest.raises(Conflict, match="cannot go from open to closed"):
            workflow.transition(s, tid, "closed", user(s, "analyst"))
        with pytest.raises(UsageError, match="needs a reason"):
            workflow.transition(s, tid, "false_positive", user(s, "analyst"), "  ")
        with pytest.raises(UsageError, match="viewer and cannot work tickets"):
            workflow.assign(s, tid, "viewer", user(s, "analyst"))
        with pytest.raises(UsageError, match="not an active Vigil user"):
            workflow.assign(s, tid, "nobody", user(s, "analyst"))
        with pytest.raises(Conflict, match="file the initial report"):
            workflow.file_report(s, tid, "formal", "x", user(s, "analyst"))
        workflow.file_report(s, tid, "initial", "x", user(s, "analyst"))
        workflow.file_report(s, tid, "formal", "y", user(s, "analyst"))
        with pytest.raises(Conflict, match="resolve it"):
            workflow.file_report(s, tid, "closure", "z", user(s, "analyst"))
        with pytest.raises(Conflict, match="already filed"):
            workflow.file_report(s, tid, "initial", "again", user(s, "analyst"))


def test_a_late_initial_report_says_so(sessions) -> None:
    (tid,) = fail_at(sessions, T0)
    late = T0 + INITIAL_REPORT_WINDOW + dt.timedelta(minutes=12)
    with sessions.begin() as s:
        workflow.file_report(s, tid, "initial", "sorry", user(s, "analyst"), now=late)
    with sessions() as s:
        (event,) = s.execute(select(TicketEvent).where(TicketEvent.kind == "report")).scalars()
        assert "12 min after it was due" in event.text


def test_false_positive_without_exception_reopens_when_it_fails_again_with_a_new_report_clock(sessions) -> None:
    (tid,) = fail_at(sessions, T0)
    with sessions.begin() as s:
        workflow.file_report(s, tid, "initial", "looks bad", user(s, "analyst"), now=T0)
        workflow.transition(s, tid, "false_positive", user(s, "analyst"), "lab box", now=T0 + dt.timedelta(minutes=1))
    later = T0 + dt.timedelta(hours=2)
    assert fail_at(sessions, later) == [tid]
    with sessions() as s:
        t = s.get(Ticket, tid)
        assert t is not None and t.status == "open" and t.reopened == 1
        assert t.initial_report_due == later + INITIAL_REPORT_WINDOW
        last = s.execute(select(TicketEvent).where(TicketEvent.ticket_id == tid)
                         .order_by(TicketEvent.id.desc()).limit(1)).scalar_one()
        assert last.kind == "reopened" and "no exception covers it" in last.text
        # A new incident: its report stages start again.
        assert workflow.ticket_detail(s, t)["next_report"] == "initial"


def test_false_positive_with_exception_stops_recurrence_until_it_expires(sessions) -> None:
    (tid,) = fail_at(sessions, T0)
    expires = T0 + dt.timedelta(days=7)
    with sessions.begin() as s:
        t = workflow.transition(s, tid, "false_positive", user(s, "analyst"), "redis is the session cache here",
                                workflow.ExceptionRequest(owner="admin", expires=rfc(expires)), now=T0)
        exc_id = t.exception_id
        assert exc_id is not None
    # Fails again inside the exception: recorded, no reopening, finding names the exception.
    assert fail_at(sessions, T0 + dt.timedelta(days=1)) == []
    with sessions() as s:
        t2 = s.get(Ticket, tid)
        assert t2 is not None and t2.status == "false_positive" and t2.occurrences == 2
        f = s.execute(select(Finding)).scalar_one()
        assert f.status == "fail" and f.exception_id == exc_id
        e = exceptions.get(s, exc_id)
        assert (e.rule_id, e.assets, e.subject, e.owner, e.ticket_id) == ("PORTS-ALLOWED", [ASSET], SUBJECT, "admin",
                                                                         tid)
        assert e.reason == "redis is the session cache here"
    # Nothing happens before expiry ...
    with sessions.begin() as s:
        assert tickets.release_lapsed_exceptions(s, expires - dt.timedelta(seconds=1)) == []
    # ... and at expiry the still-failing finding reopens its ticket at once.
    with sessions.begin() as s:
        assert tickets.release_lapsed_exceptions(s, expires + dt.timedelta(seconds=1)) == [tid]
    with sessions() as s:
        t3 = s.get(Ticket, tid)
        assert t3 is not None and t3.status == "open" and t3.exception_id is None
        f = s.execute(select(Finding)).scalar_one()
        assert f.exception_id is None
        last = s.execute(select(TicketEvent).where(TicketEvent.ticket_id == tid)
                         .order_by(TicketEvent.id.desc()).limit(1)).scalar_one()
        assert f"exception {exc_id} expired" in last.text


def test_an_exception_created_ahead_means_no_ticket_and_revoking_it_opens_one(sessions) -> None:
    with sessions.begin() as s:
        e = exceptions.create(s, "analyst", "PORTS-ALLOWED", ["tag:web"], "tcp/*:6379", "admin",
                              "migration in progress", rfc(T0 + dt.timedelta(days=3)), now=T0)
        eid = e.id
    assert fail_at(sessions, T0 + dt.timedelta(minutes=5)) == []
    with sessions() as s:
        assert s.execute(select(Ticket)).first() is None
    with sessions.begin() as s:
        with pytest.raises(Forbidden, match="only an admin or its creator"):
            exceptions.revoke(s, eid, user(s, "bob"), "no")
        exceptions.revoke(s, eid, user(s, "admin"), "migration done", now=T0 + dt.timedelta(hours=1))
        opened = tickets.release_lapsed_exceptions(s, T0 + dt.timedelta(hours=1))
    assert len(opened) == 1
    with sessions() as s:
        (t,) = s.execute(select(Ticket)).scalars()
        assert t.status == "open" and t.subject == SUBJECT
        assert [x.action for x in audit.iter_entries(s) if x.object_type == "exception"] == [
            "exception.create", "exception.revoke"]


def test_exception_input_is_checked(sessions) -> None:
    with sessions.begin() as s:
        for kwargs, msg in [
            ({"owner": "ghost"}, "not a Vigil user"),
            ({"expires": rfc(T0 - dt.timedelta(days=1))}, "in the past"),
            ({"expires": rfc(T0 + dt.timedelta(days=400))}, "at most 366 days"),
            ({"assets": ["web-99"]}, "matches no enrolled agent"),
            ({"reason": ""}, "reason is required"),
            ({"expires": "tomorrow"}, "not an RFC 3339 time"),
        ]:
            args = {"rule_id": "PORTS-ALLOWED", "assets": ["web-01"], "subject": "*", "owner": "admin",
                    "reason": "why", "expires": rfc(T0 + dt.timedelta(days=1)), **kwargs}
            with pytest.raises(UsageError, match=msg):
                exceptions.create(s, "analyst", now=T0, **args)


def test_baseline_change_hint_for_a_port(sessions) -> None:
    (tid,) = fail_at(sessions, T0)
    with sessions() as s:
        hint = workflow.suggest_baseline_change(workflow.get_ticket(s, tid))
    assert hint == 'rule PORTS-ALLOWED in baseline tw-securities-linux: add "tcp/6379 redis-server" to ' \
                   "expect.listening.allow"
