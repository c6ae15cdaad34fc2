"""People working tickets: transitions, assignment, comments, report stages, false positives.

The one place these rules live; the REST API, the web UI and the CLI all call it, so a viewer cannot
transition a ticket whichever door they use. Every function works in the caller's transaction, writes
the ticket's timeline (which queues notifications) and the audit log, and raises
:class:`~controller.errors.Forbidden` (role), :class:`~controller.errors.Conflict` (state),
:class:`~controller.errors.NotFound` or :class:`~common.errors.UsageError` (input).

States (SPEC section 3)::

    open ─► acknowledged ─► in_progress ─► resolved ─► closed
      │           │               │            │          │
      └───────────┴───────────────┴─► false_positive ◄────┘ (reopen: resolved/closed/false_positive ─► open)

Report stages for critical and high tickets (TPEx-CPA 3(12)2): ``initial`` (due 30 minutes after the
ticket opened), ``formal``, ``closure``, filed in that order, each with who filed it and when.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.errors import UsageError
from controller import vocabulary
from controller.domain import audit, exceptions
from controller.domain.tickets import ACTIVE, record_event
from controller.domain.users import require, role_allows
from controller.errors import Conflict, NotFound
from controller.judges import JUDGES, TicketView
from controller.storage.models import Agent, RiskException, Ticket, TicketEvent, TicketReport, User
from controller.storage.serialize import event_json, report_json, rfc3339, ticket_json

__all__ = [
    "REPORT_STAGES",
    "TRANSITIONS",
    "ExceptionRequest",
    "assign",
    "comment",
    "file_report",
    "get_ticket",
    "suggest_baseline_change",
    "ticket_detail",
    "transition",
]

TRANSITIONS = vocabulary.TRANSITIONS
REPORT_STAGES = ("initial", "formal", "closure")
MAX_TEXT = 20000


@dataclass(frozen=True)
class ExceptionRequest:
    """The exception offered when a ticket is marked a false positive: accepted risk for its rule on its
    asset (or ``assets``) and subject (or ``subject``, a glob) until ``expires``."""

    owner: str
    expires: str
    reason: str = ""
    assets: list[str] | None = None
    subject: str | None = None

    @classmethod
    def from_json(cls, value: Any) -> ExceptionRequest | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise UsageError('exception must be an object: {"owner": USER, "expires": RFC3339, "reason": TEXT}')
        assets = value.get("assets")
        if isinstance(assets, str):
            assets = [a.strip() for a in assets.split(",") if a.strip()]
        return cls(owner=str(value.get("owner") or ""), expires=str(value.get("expires") or ""),
                   reason=str(value.get("reason") or ""), assets=assets,
                   subject=None if value.get("subject") is None else str(value["subject"]))


def _text(value: Any, field: str, required: bool = True) -> str:
    text = str(value or "").strip()
    if required and not text:
        raise UsageError(f"{field} must not be empty")
    if len(text) > MAX_TEXT:
        raise UsageError(f"{field}: at most {MAX_TEXT} characters")
    return text


def get_ticket(session: Session, ticket_id: int, lock: bool = False) -> Ticket:
    t = session.get(Ticket, ticket_id, with_for_update=lock or None)
    if t is None:
        raise NotFound(f"no ticket {ticket_id}")
    return t


def _now(now: dt.datetime | None) -> dt.datetime:
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)


def transition(
    session: Session,
    ticket_id: int,
    to: str,
    user: User,
    reason: str = "",
    exception: ExceptionRequest | None = None,
    now: dt.datetime | None = None,
) -> Ticket:
    """Move a ticket to ``to``. ``false_positive`` needs a reason (TPEx-CPA 3(12)5) and may carry the
    exception that stops the recurrence; it is created in the same transaction."""
    require(user, "analyst", "working a ticket")
    when = _now(now)
    if to not in TRANSITIONS:
        raise UsageError(f"'to' must be one of {', '.join(TRANSITIONS)}, not {to!r}")
    why = _text(reason, "reason", required=False)
    if to == "false_positive" and not why:
        raise UsageError("marking a false positive needs a reason (TPEx-CPA 3(12)5)")
    if exception is not None and to != "false_positive":
        raise UsageError("an exception can only be offered when marking a false positive")
    t = get_ticket(session, ticket_id, lock=True)
    if to not in TRANSITIONS[t.status]:
        raise Conflict(f"ticket {t.id} cannot go from {t.status} to {to}; allowed: {', '.join(TRANSITIONS[t.status])}")
    old = t.status
    t.status = to
    if to in ("resolved", "closed", "false_positive"):
        t.resolved_at = t.resolved_at or when
        t.resolution = why or t.resolution
    else:
        t.resolved_at = None
        if old in ("resolved", "closed", "false_positive"):
            t.reopened = (t.reopened or 0) + 1
    record_event(session, t, "transition", why, when, actor=user.username, from_status=old, to_status=to)
    audit.record(session, user.username, "ticket.transition", "ticket", str(t.id),
                 {"from": old, "to": to, "reason": why}, at=when)
    if exception is not None:
        exc = exceptions.create(
            session, user.username, t.rule_id, exception.assets or [t.asset],
            exception.subject if exception.subject is not None else t.subject, exception.owner,
            exception.reason or why, exception.expires, ticket_id=t.id, now=when)
        t.exception_id = exc.id
        record_event(session, t, "exception",
                     f"exception {exc.id} accepts this risk until {rfc3339(exc.expires_at)} (owner {exc.owner})",
                     when, actor=user.username)
    return t


def assign(session: Session, ticket_id: int, assignee: str | None, user: User, now: dt.datetime | None = None
           ) -> Ticket:
    """Give the ticket to an analyst or admin (``None`` or "" unassigns)."""
    require(user, "analyst", "assigning a ticket")
    when = _now(now)
    t = get_ticket(session, ticket_id, lock=True)
    name = (assignee or "").strip() or None
    if name is not None:
        target = session.get(User, name)
        if target is None or target.disabled:
            raise UsageError(f"assignee {name!r} is not an active Vigil user")
        if not role_allows(target.role, "analyst"):
            raise UsageError(f"assignee {name!r} is a {target.role} and cannot work tickets; pick an analyst or admin")
    if name == t.assignee:
        return t
    old = t.assignee
    t.assignee = name
    text = f"assigned to {name}" if name else f"unassigned (was {old})"
    record_event(session, t, "assigned", text, when, actor=user.username)
    audit.record(session, user.username, "ticket.assign", "ticket", str(t.id), {"from": old, "to": name}, at=when)
    return t


def comment(session: Session, ticket_id: int, text: str, user: User, now: dt.datetime | None = None) -> TicketEvent:
    require(user, "analyst", "commenting on a ticket")
    when = _now(now)
    body = _text(text, "text")
    t = get_ticket(session, ticket_id)
    event = record_event(session, t, "comment", body, when, actor=user.username)
    audit.record(session, user.username, "ticket.comment", "ticket", str(t.id), {"text": body}, at=when)
    return event


def file_report(session: Session, ticket_id: int, stage: str, text: str, user: User,
                now: dt.datetime | None = None) -> TicketReport:
    """File a report stage; stages go initial → formal → closure, each once per incident."""
    require(user, "analyst", "filing a report")
    when = _now(now)
    if stage not in REPORT_STAGES:
        raise UsageError(f"stage must be one of {', '.join(REPORT_STAGES)}, not {stage!r}")
    body = _text(text, "text")
    t = get_ticket(session, ticket_id, lock=True)
    filed = _current_stages(session, t, _reports(session, t.id))
    expected = REPORT_STAGES[len(filed)] if len(filed) < len(REPORT_STAGES) else None
    if stage in filed:
        raise Conflict(f"the {stage} report of ticket {t.id} was already filed")
    if stage != expected:
        raise Conflict(f"file the {expected} report of ticket {t.id} before the {stage} report")
    if stage == "closure" and t.status in ACTIVE:
        raise Conflict(f"ticket {t.id} is {t.status}: resolve it (or mark it a false positive) before the "
                       "closure report")
    report = TicketReport(ticket_id=t.id, stage=stage, filed_by=user.username, filed_at=when, text=body)
    session.add(report)
    late = ""
    if stage == "initial" and t.initial_report_due is not None and when > t.initial_report_due:
        late = f" ({int((when - t.initial_report_due).total_seconds() // 60)} min after it was due)"
    record_event(session, t, "report", f"{stage} report filed{late}: {body}", when, actor=user.username)
    audit.record(session, user.username, "ticket.report", "ticket", str(t.id),
                 {"stage": stage, "text": body, "late": bool(late)}, at=when)
    return report


def _reports(session: Session, ticket_id: int) -> list[TicketReport]:
    return list(session.execute(select(TicketReport).where(TicketReport.ticket_id == ticket_id)
                                .order_by(TicketReport.filed_at, TicketReport.id)).scalars())


def _current_stages(session: Session, t: Ticket, reports: list[TicketReport]) -> list[str]:
    """The stages filed for the ticket's current incident: a reopened ticket starts them again."""
    reopened = session.execute(
        select(TicketEvent.at).where(TicketEvent.ticket_id == t.id, TicketEvent.to_status == "open",
                                     TicketEvent.from_status.is_not(None))
        .order_by(TicketEvent.at.desc(), TicketEvent.id.desc()).limit(1)).scalar_one_or_none()
    return [r.stage for r in reports if reopened is None or r.filed_at >= reopened]


def suggest_baseline_change(t: Ticket) -> str | None:
    """What to change in the baseline so the alert condition stops firing for this subject
    (TPEx-CPA 3(12)5), as a hint an admin can apply; ``None`` when no edit would be sensible.
    The ticket's judge knows what its check's rules look like."""
    judge = JUDGES.get(t.check_id)
    if judge is None:
        return None
    return judge.hint(TicketView(t.rule_id, t.baseline, t.subject, t.evidence or {}))


def ticket_detail(session: Session, t: Ticket) -> dict[str, Any]:
    """A ticket with its timeline, report stages, covering exception and the false-positive hint."""
    agent = session.get(Agent, t.asset)
    out = ticket_json(t, agent.hostname if agent else None)
    out["timeline"] = [event_json(e) for e in session.execute(
        select(TicketEvent).where(TicketEvent.ticket_id == t.id).order_by(TicketEvent.at, TicketEvent.id)).scalars()]
    reports = _reports(session, t.id)
    out["reports"] = [report_json(r) for r in reports]
    filed = _current_stages(session, t, reports)
    out["next_report"] = REPORT_STAGES[len(filed)] if len(filed) < len(REPORT_STAGES) else None
    out["allowed_transitions"] = list(TRANSITIONS.get(t.status, ()))
    exc = session.get(RiskException, t.exception_id) if t.exception_id else None
    out["exception"] = exceptions.exception_json(exc) if exc is not None else None
    out["baseline_change_hint"] = suggest_baseline_change(t)
    return out
