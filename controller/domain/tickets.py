"""Findings become tickets: one ticket per dedupe key (asset, baseline, rule, subject), never a second one.

A failing or unknown observation opens the ticket or, when it is already open, raises ``occurrences``
and ``last_seen``; an unknown one ("cannot judge: ...") tickets at the rule's severity unless the rule
says ``on_unknown: record``. A passing observation resolves it automatically with a record of why,
except for findings about events rather than states (a file change that happened stays a ticket until
a human handles it, whatever happens to the file afterwards). The baseline is part of the key, so two
baselines that both apply to an asset and share a rule id keep a ticket each. Critical and high
tickets carry ``initial_report_due`` = first_seen + 30 min (TPEx-CPA 3(12)2).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import vocabulary
from controller.domain import audit, exceptions
from controller.domain.policy import Applicable
from controller.judges.base import Observation
from controller.notify import enqueue
from controller.storage.models import Agent, Finding, RiskException, Ticket, TicketEvent
from controller.vocabulary import FAIL, PASS, UNKNOWN

# A ticket in one of ACTIVE is being worked or waits for work: a new failure adds to it.
SEVERITIES = vocabulary.SEVERITIES
STATUSES = vocabulary.TICKET_STATUSES
ACTIVE = vocabulary.ACTIVE_STATUSES
INITIAL_REPORT_WINDOW = dt.timedelta(minutes=30)
SYSTEM = "system"


@dataclass(frozen=True)
class RuleRef:
    """What a finding needs to know about the rule and baseline it came from."""

    rule_id: str
    check_id: str
    severity: str
    refs: tuple[str, ...]
    baseline: str
    baseline_version: int
    # What an unknown verdict does: "ticket" (the default) or "record" (a finding, no ticket).
    on_unknown: str = "ticket"

    @classmethod
    def of(cls, app: Applicable, on_unknown: str | None = None) -> RuleRef:
        """The reference of an applicable rule; ``on_unknown`` overrides the rule's own."""
        rule = app.rule
        return cls(rule.id, rule.check, rule.severity, tuple(rule.refs), app.baseline.name, app.baseline.version,
                   on_unknown or rule.on_unknown)


def dedupe_key(asset: str, baseline: str, rule_id: str, subject: str) -> str:
    return f"{asset}|{baseline}|{rule_id}|{subject}"


def record_event(
    session: Session,
    ticket: Ticket,
    kind: str,
    text: str,
    at: dt.datetime,
    actor: str = SYSTEM,
    from_status: str | None = None,
    to_status: str | None = None,
) -> TicketEvent:
    """Add one entry to the ticket's timeline and queue it for notification, in the caller's transaction."""
    event = TicketEvent(
        ticket_id=ticket.id, at=at, actor=actor, kind=kind, text=text, from_status=from_status, to_status=to_status
    )
    session.add(event)
    enqueue(session, ticket, event)
    return event


def _title(rule: RuleRef, asset_name: str, outcome: Observation) -> str:
    message = outcome.message.removeprefix(f"{rule.rule_id}: ")
    return f"{rule.rule_id} on {asset_name}: {message}"[:512]


class Book:
    """The findings and tickets of one asset, read once so that judging a batch of reports costs no
    further queries: the session's unit of work writes only what changed, once, at the end."""

    def __init__(self, session: Session, asset: str, now: dt.datetime | None = None) -> None:
        self.asset = asset
        agent = session.get(Agent, asset)
        self.hostname = agent.hostname if agent else ""
        self.tags: list[str] = list(agent.tags) if agent else []
        self.exceptions: list[RiskException] = exceptions.active(session, now)
        self.findings: dict[tuple[str, str, str], Finding] = {
            (f.baseline, f.rule_id, f.subject): f
            for f in session.execute(select(Finding).where(Finding.asset == asset)).scalars()
        }
        self.tickets: dict[str, Ticket] = {
            t.dedupe_key: t for t in session.execute(select(Ticket).where(Ticket.asset == asset)).scalars()
        }


def apply_outcomes(
    session: Session,
    asset: str,
    asset_name: str,
    rule: RuleRef,
    outcomes: Iterable[Observation],
    now: dt.datetime,
    result_id: int | None,
    complete: bool = True,
    book: Book | None = None,
    auto_resolve: bool = True,
    settled: Mapping[str, str] | None = None,
) -> list[Ticket]:
    """Record ``outcomes`` of one evaluation of ``rule`` on ``asset``; open, bump or resolve tickets.

    ``complete`` says the outcomes cover every subject the rule has on this asset, so a subject that
    failed before and is absent now (a listener that closed) passes. ``book`` is the asset's findings and
    tickets when the caller judges many reports in one transaction.
    ``auto_resolve=False`` makes passing outcomes update their findings but leave tickets alone: the
    outcomes are events (a file change), and a later good event does not undo an earlier bad one.
    ``settled`` maps subjects that pass when absent, even when the outcomes are not complete, to the
    reason (the check ran again; a full scan stayed below the file cap); those do resolve tickets.
    Returns the tickets opened or reopened.
    """
    book = book if book is not None and book.asset == asset else Book(session, asset, now)
    touched: list[Ticket] = []
    seen: set[str] = set()
    with session.no_autoflush:
        for outcome in outcomes:
            seen.add(outcome.subject)
            ticket = _apply_one(session, book, asset_name, rule, outcome, now, result_id, auto_resolve)
            if ticket is not None:
                touched.append(ticket)
        settled = settled or {}
        if complete or settled:
            stale = [f for (baseline, rule_id, subject), f in book.findings.items()
                     if baseline == rule.baseline and rule_id == rule.rule_id and f.status != PASS
                     and subject not in seen and (complete or subject in settled)]
            for finding in stale:
                why = settled.get(finding.subject) or f"{finding.subject} no longer observed"
                gone = Observation(finding.subject, PASS, why, {})
                _apply_one(session, book, asset_name, rule, gone, now, result_id)
    return touched


def _update(row: Finding, **values: Any) -> None:
    """Assign only what changed: most results confirm a finding as it was, and every assignment costs the
    ORM its change tracking (and a JSON column its re-serialisation) whether the value differs or not."""
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)


def _apply_one(
    session: Session,
    book: Book,
    asset_name: str,
    rule: RuleRef,
    outcome: Observation,
    now: dt.datetime,
    result_id: int | None,
    auto_resolve: bool = True,
) -> Ticket | None:
    asset = book.asset
    fkey = (rule.baseline, rule.rule_id, outcome.subject)
    finding = book.findings.get(fkey)
    status = outcome.verdict
    if finding is None:
        finding = Finding(asset=asset, rule_id=rule.rule_id, subject=outcome.subject, first_seen=now)
        session.add(finding)
        book.findings[fkey] = finding
    elif finding.status != status:
        finding.first_seen = now
    covered = None if outcome.passed else exceptions.covering(
        book.exceptions, asset, book.hostname, book.tags, rule.rule_id, outcome.subject)
    _update(finding, check_id=rule.check_id, status=status, severity=rule.severity, baseline=rule.baseline,
            baseline_version=rule.baseline_version, refs=list(rule.refs), message=outcome.message,
            evidence=outcome.evidence, last_seen=now, result_id=result_id,
            exception_id=covered.id if covered is not None else None)

    key = dedupe_key(asset, rule.baseline, rule.rule_id, outcome.subject)
    ticket = book.tickets.get(key)
    if covered is not None:
        # Accepted risk: recorded as a failing finding, no ticket opened or reopened.
        if ticket is not None:
            ticket.occurrences += 1
            ticket.last_seen = now
            ticket.exception_id = covered.id
        return None
    if outcome.passed:
        if auto_resolve and ticket is not None and ticket.status in ACTIVE:
            old = ticket.status
            ticket.status = "resolved"
            ticket.resolved_at = now
            ticket.resolution = f"automatically resolved: {outcome.message}"
            record_event(session, ticket, "auto_resolved", ticket.resolution, now, from_status=old,
                         to_status="resolved")
            audit.record(
                session,
                SYSTEM,
                "ticket.resolve",
                "ticket",
                str(ticket.id),
                {"reason": ticket.resolution, "result_id": result_id},
                at=now,
            )
        return None
    if status == UNKNOWN and rule.on_unknown == "record":
        return None

    if ticket is None:
        return _open(session, book, key, rule, asset_name, outcome, now, result_id)
    return _bump(session, ticket, rule, asset_name, outcome, now, result_id)


def _open(
    session: Session,
    book: Book,
    key: str,
    rule: RuleRef,
    asset_name: str,
    outcome: Observation,
    now: dt.datetime,
    result_id: int | None,
) -> Ticket:
    asset = book.asset
    ticket = Ticket(
        dedupe_key=key,
        title=_title(rule, asset_name, outcome),
        severity=rule.severity,
        status="open",
        asset=asset,
        check_id=rule.check_id,
        rule_id=rule.rule_id,
        subject=outcome.subject,
        refs=list(rule.refs),
        baseline=rule.baseline,
        baseline_version=rule.baseline_version,
        evidence=outcome.evidence,
        first_seen=now,
        last_seen=now,
        occurrences=1,
        initial_report_due=now + INITIAL_REPORT_WINDOW if rule.severity in vocabulary.REPORTED_SEVERITIES else None,
    )
    session.add(ticket)
    session.flush()  # the event below needs its id
    book.tickets[key] = ticket
    record_event(session, ticket, "opened", outcome.message, now, to_status="open")
    audit.record(
        session,
        SYSTEM,
        "ticket.open",
        "ticket",
        str(ticket.id),
        {"key": key, "severity": rule.severity, "result_id": result_id},
        at=now,
    )
    return ticket


def _bump(
    session: Session, ticket: Ticket, rule: RuleRef, asset_name: str, outcome: Observation, now: dt.datetime,
    result_id: int | None,
) -> Ticket | None:
    ticket.occurrences += 1
    ticket.last_seen = now
    ticket.evidence = outcome.evidence
    ticket.exception_id = None
    # The title says what the latest occurrence said (a count that grew, another reason), as the evidence does.
    title = _title(rule, asset_name, outcome)
    if ticket.title != title:
        ticket.title = title
    if ticket.status in ("resolved", "closed", "false_positive"):
        # The same problem is back (and no exception accepts it): reopen the one ticket rather than open
        # a second. A false positive that recurs means the alert condition was not revised.
        old = ticket.status
        ticket.status = "open"
        ticket.resolved_at = None
        ticket.reopened = (ticket.reopened or 0) + 1
        if ticket.severity in vocabulary.REPORTED_SEVERITIES:
            # A new incident for the report duty: the 30 minutes run from now.
            ticket.initial_report_due = now + INITIAL_REPORT_WINDOW
        why = outcome.message if old != "false_positive" else (
            f"marked false positive, but fails again and no exception covers it: {outcome.message}")
        record_event(session, ticket, "reopened", why, now, from_status=old, to_status="open")
        audit.record(session, SYSTEM, "ticket.reopen", "ticket", str(ticket.id),
                     {"key": ticket.dedupe_key, "from": old, "result_id": result_id}, at=now)
        return ticket
    return None


def rule_of(finding: Finding) -> RuleRef:
    return RuleRef(finding.rule_id, finding.check_id, finding.severity, tuple(finding.refs), finding.baseline,
                   finding.baseline_version)


def reopen_for_finding(session: Session, finding: Finding, message: str, now: dt.datetime,
                       book: Book | None = None) -> Ticket | None:
    """Open or reopen the ticket of a failing finding that was not ticketed (its exception lapsed).
    ``book`` is the asset's findings and tickets when the caller handles several findings of it."""
    book = book if book is not None and book.asset == finding.asset else Book(session, finding.asset, now)
    rule = rule_of(finding)
    outcome = Observation(finding.subject, UNKNOWN if finding.status == UNKNOWN else FAIL, message,
                          dict(finding.evidence))
    key = dedupe_key(finding.asset, finding.baseline, finding.rule_id, finding.subject)
    ticket = book.tickets.get(key)
    name = book.hostname or finding.asset
    with session.no_autoflush:
        if ticket is None:
            return _open(session, book, key, rule, name, outcome, now, finding.result_id)
        if ticket.status in ACTIVE:
            ticket.exception_id = None
            return None
        return _bump(session, ticket, rule, name, outcome, now, finding.result_id)


def release_lapsed_exceptions(session: Session, now: dt.datetime | None = None) -> list[int]:
    """Findings whose exception expired or was revoked lose it; those still failing (or unknown) open or
    reopen their ticket now. Returns the ids of the tickets opened or reopened."""
    when = now or dt.datetime.now(dt.UTC)
    rows = session.execute(
        select(Finding, RiskException).join(RiskException, RiskException.id == Finding.exception_id)
        .where((RiskException.revoked_at.is_not(None)) | (RiskException.expires_at <= when))
    ).all()
    opened: list[int] = []
    books: dict[str, Book] = {}
    for finding, exc in rows:
        finding.exception_id = None
        if finding.status == PASS:
            continue
        why = "revoked" if exc.revoked_at is not None else "expired"
        if finding.asset not in books:
            books[finding.asset] = Book(session, finding.asset, when)
        ticket = reopen_for_finding(session, finding, f"exception {exc.id} {why}: {finding.message}", when,
                                    books[finding.asset])
        if ticket is not None:
            opened.append(ticket.id)
    return opened
