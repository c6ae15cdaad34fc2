"""Findings become tickets: one per (asset, rule, subject), bumped on repeats, resolved and reopened."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from controller.domain import audit
from controller.domain.tickets import INITIAL_REPORT_WINDOW, RuleRef, apply_outcomes, dedupe_key
from controller.judges.base import Observation
from controller.storage.models import AuditEntry, Finding, Ticket, TicketEvent
from tests.controller._db import migrated_sessions

T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
ASSET = "agt-0123456789abcdef"
PORTS = RuleRef(
    rule_id="PORTS-ALLOWED",
    check_id="ports",
    severity="high",
    refs=("TPEx-CPA 3(10)5", "SFA-ETG Art.8"),
    baseline="tw-securities-web",
    baseline_version=3,
)
SUBJECT = "tcp/0.0.0.0:6379"


def fail(subject: str = SUBJECT, message: str = "tcp/0.0.0.0:6379 (redis) is not allowed") -> Observation:
    return Observation(subject, "fail", message, {"port": 6379, "process": "redis-server"})


def ok(subject: str = SUBJECT, message: str = "tcp/0.0.0.0:6379 is allowed") -> Observation:
    return Observation(subject, "pass", message, {"port": 6379})


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(url=db_url) as factory:
        yield factory


def apply(
    sessions: sessionmaker[Session],
    outcomes: list[Observation],
    at: dt.datetime,
    rule: RuleRef = PORTS,
    complete: bool = True,
    result_id: int | None = 7,
) -> list[int]:
    with sessions.begin() as s:
        touched = apply_outcomes(s, ASSET, "web-01", rule, outcomes, at, result_id, complete=complete)
        return [t.id for t in touched]


def tickets(s: Session) -> list[Ticket]:
    return list(s.execute(select(Ticket).order_by(Ticket.id)).scalars().all())


def events(s: Session, ticket_id: int) -> list[TicketEvent]:
    return list(
        s.execute(select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id)).scalars()
    )


def audit_actions(s: Session) -> list[tuple[str, str]]:
    rows = s.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars().all()
    return [(r.action, r.object_id) for r in rows]


def finding(s: Session, subject: str = SUBJECT) -> Finding:
    return s.execute(select(Finding).where(Finding.subject == subject)).scalar_one()


def test_failing_outcome_opens_one_ticket(sessions: sessionmaker[Session]) -> None:
    opened = apply(sessions, [fail()], T0)
    with sessions() as s:
        [t] = tickets(s)
        assert opened == [t.id]
        assert t.status == "open"
        assert t.occurrences == 1
        assert t.first_seen == t.last_seen == T0
        assert t.initial_report_due == T0 + dt.timedelta(minutes=30)
        assert t.dedupe_key == dedupe_key(ASSET, "tw-securities-web", "PORTS-ALLOWED", SUBJECT)
        assert (t.asset, t.rule_id, t.subject, t.check_id, t.severity) == (
            ASSET,
            "PORTS-ALLOWED",
            SUBJECT,
            "ports",
            "high",
        )
        assert (t.baseline, t.baseline_version) == ("tw-securities-web", 3)
        assert t.refs == ["TPEx-CPA 3(10)5", "SFA-ETG Art.8"]
        assert t.title.startswith("PORTS-ALLOWED on web-01: ")
        assert t.evidence == {"port": 6379, "process": "redis-server"}
        assert t.resolved_at is None

        [ev] = events(s, t.id)
        assert (ev.kind, ev.from_status, ev.to_status, ev.actor, ev.at) == ("opened", None, "open", "system", T0)
        assert audit_actions(s) == [("ticket.open", str(t.id))]
        assert audit.verify(s).ok


@pytest.mark.parametrize(
    ("severity", "due"),
    [("critical", INITIAL_REPORT_WINDOW), ("high", INITIAL_REPORT_WINDOW), ("medium", None), ("low", None)],
)
def test_initial_report_due_only_for_critical_and_high(
    sessions: sessionmaker[Session], severity: str, due: dt.timedelta | None
) -> None:
    rule = RuleRef("CLOCK", "ntp", severity, (), "tw-securities-web", 3)
    apply(sessions, [Observation("", "fail", "clock is off by 900 ms", {"offset_ms": 900})], T0, rule=rule)
    with sessions() as s:
        [t] = tickets(s)
        assert t.severity == severity
        assert t.initial_report_due == (None if due is None else T0 + due)


def test_repeated_failure_bumps_the_same_ticket(sessions: sessionmaker[Session]) -> None:
    apply(sessions, [fail()], T0)
    t1, t2 = T0 + dt.timedelta(minutes=5), T0 + dt.timedelta(minutes=10)
    assert apply(sessions, [fail()], t1) == []
    assert apply(sessions, [fail(message="still there")], t2) == []
    with sessions() as s:
        [t] = tickets(s)
        assert t.status == "open"
        assert t.occurrences == 3
        assert t.first_seen == T0
        assert t.last_seen == t2
        # The deadline runs from the first sighting, not the latest.
        assert t.initial_report_due == T0 + INITIAL_REPORT_WINDOW
        assert [e.kind for e in events(s, t.id)] == ["opened"]
        assert [a for a, _ in audit_actions(s)] == ["ticket.open"]
        f = finding(s)
        assert (f.status, f.first_seen, f.last_seen, f.message) == ("fail", T0, t2, "still there")


def test_failures_of_different_subjects_get_their_own_tickets(sessions: sessionmaker[Session]) -> None:
    opened = apply(sessions, [fail("tcp/0.0.0.0:6379"), fail("tcp/0.0.0.0:23"), ok("tcp/0.0.0.0:22")], T0)
    with sessions() as s:
        ts = tickets(s)
        assert opened == [t.id for t in ts]
        assert sorted(t.subject for t in ts) == ["tcp/0.0.0.0:23", "tcp/0.0.0.0:6379"]
        assert s.execute(select(func.count()).select_from(Finding)).scalar_one() == 3


def test_passing_outcome_without_ticket_opens_nothing(sessions: sessionmaker[Session]) -> None:
    assert apply(sessions, [ok()], T0) == []
    with sessions() as s:
        assert tickets(s) == []
        assert finding(s).status == "pass"
        assert audit_actions(s) == []


def test_passing_outcome_resolves_automatically(sessions: sessionmaker[Session]) -> None:
    apply(sessions, [fail()], T0)
    t1 = T0 + dt.timedelta(minutes=7)
    assert apply(sessions, [ok()], t1) == []
    with sessions() as s:
        [t] = tickets(s)
        assert t.status == "resolved"
        assert t.resolved_at == t1
        assert t.resolution == "automatically resolved: tcp/0.0.0.0:6379 is allowed"
        ev = events(s, t.id)[-1]
        assert (ev.kind, ev.from_status, ev.to_status, ev.text, ev.at) == (
            "auto_resolved",
            "open",
            "resolved",
            t.resolution,
            t1,
        )
        assert audit_actions(s) == [("ticket.open", str(t.id)), ("ticket.resolve", str(t.id))]
        assert finding(s).status == "pass"

    # Passing again changes nothing more.
    apply(sessions, [ok()], t1 + dt.timedelta(minutes=1))
    with sessions() as s:
        [t] = tickets(s)
        assert t.resolved_at == t1
        assert len(events(s, t.id)) == 2


def test_failing_again_reopens_the_same_ticket(sessions: sessionmaker[Session]) -> None:
    [first_id] = apply(sessions, [fail()], T0)
    apply(sessions, [ok()], T0 + dt.timedelta(minutes=5))
    t2 = T0 + dt.timedelta(minutes=9)
    assert apply(sessions, [fail(message="redis is back")], t2) == [first_id]
    with sessions() as s:
        [t] = tickets(s)
        assert t.id == first_id
        assert t.status == "open"
        assert t.resolved_at is None
        assert t.occurrences == 2
        assert t.last_seen == t2
        assert t.title == "PORTS-ALLOWED on web-01: redis is back"
        assert [(e.kind, e.from_status, e.to_status) for e in events(s, t.id)] == [
            ("opened", None, "open"),
            ("auto_resolved", "open", "resolved"),
            ("reopened", "resolved", "open"),
        ]
        assert [a for a, _ in audit_actions(s)] == ["ticket.open", "ticket.resolve", "ticket.reopen"]
        assert audit.verify(s).ok


def test_absent_subject_passes_when_outcomes_are_complete(sessions: sessionmaker[Session]) -> None:
    apply(sessions, [fail(), fail("tcp/0.0.0.0:23")], T0)
    t1 = T0 + dt.timedelta(minutes=5)
    # Port 23 is still there; 6379 closed and is simply no longer reported.
    apply(sessions, [fail("tcp/0.0.0.0:23")], t1, complete=True)
    with sessions() as s:
        by_subject = {t.subject: t for t in tickets(s)}
        gone = by_subject[SUBJECT]
        assert gone.status == "resolved"
        assert gone.resolved_at == t1
        assert "no longer observed" in gone.resolution
        assert events(s, gone.id)[-1].kind == "auto_resolved"
        assert finding(s).status == "pass"
        still = by_subject["tcp/0.0.0.0:23"]
        assert (still.status, still.occurrences) == ("open", 2)


def test_absent_subject_stays_when_outcomes_are_partial(sessions: sessionmaker[Session]) -> None:
    apply(sessions, [fail(), fail("tcp/0.0.0.0:23")], T0)
    apply(sessions, [fail("tcp/0.0.0.0:23")], T0 + dt.timedelta(minutes=5), complete=False)
    with sessions() as s:
        by_subject = {t.subject: t for t in tickets(s)}
        assert by_subject[SUBJECT].status == "open"
        assert by_subject[SUBJECT].occurrences == 1
        assert finding(s).status == "fail"


def test_complete_outcomes_leave_other_rules_alone(sessions: sessionmaker[Session]) -> None:
    other = RuleRef("NO-TELNET", "ports", "critical", (), "tw-securities-web", 3)
    apply(sessions, [fail()], T0, rule=other)
    apply(sessions, [], T0 + dt.timedelta(minutes=1), rule=PORTS, complete=True)
    with sessions() as s:
        [t] = tickets(s)
        assert (t.rule_id, t.status) == ("NO-TELNET", "open")


def test_findings_record_baseline_rule_and_evidence(sessions: sessionmaker[Session]) -> None:
    apply(sessions, [fail()], T0, result_id=41)
    newer = RuleRef(PORTS.rule_id, PORTS.check_id, PORTS.severity, PORTS.refs, PORTS.baseline, 4)
    t1 = T0 + dt.timedelta(minutes=3)
    apply(sessions, [ok()], t1, rule=newer, result_id=42)
    with sessions() as s:
        f = finding(s)
        assert (f.asset, f.rule_id, f.subject, f.check_id) == (ASSET, "PORTS-ALLOWED", SUBJECT, "ports")
        assert (f.baseline, f.baseline_version) == ("tw-securities-web", 4)
        assert (f.severity, f.refs) == ("high", ["TPEx-CPA 3(10)5", "SFA-ETG Art.8"])
        assert (f.status, f.message, f.evidence, f.result_id) == (
            "pass",
            "tcp/0.0.0.0:6379 is allowed",
            {"port": 6379},
            42,
        )
        # first_seen is when the current status began.
        assert (f.first_seen, f.last_seen) == (t1, t1)
        [t] = tickets(s)
        # The ticket keeps the baseline version it was opened under.
        assert (t.baseline, t.baseline_version) == ("tw-securities-web", 3)
