"""Nothing an agent sends is lost without a trace: spool incarnations, missing sequences, refused reports.

An agent's spool has an *incarnation*, a random id created with the spool file. Sequences are unique
within one incarnation only: a spool that is deleted (or moved aside as damaged) starts a new one at
sequence 1. Ingest keys replay protection on (agent, incarnation, sequence); this module keeps the
rest of the story, in the caller's transaction:

- every incarnation an agent has had (``agent_incarnations``); a new one after an earlier one, or after
  results were stored, is an event: an audit entry ``agent.spool_recreated`` and a ticket "agent spool
  was recreated" (results spooled before it and not delivered may be lost). The first incarnation of a
  newly enrolled agent is recorded silently.
- sequences of one incarnation that never arrived (``sequence_gaps``): a report above the highest
  sequence received plus one records the range between and tickets; a report below it that was never
  stored is new data, stored, and counted as filling its range.
- reports ingest refused (``quarantined_reports``): kept (cut at :data:`MAX_QUARANTINE_BYTES`, with the
  size and SHA-256 of the whole) and ticketed, rather than dropped.

These tickets go under the agent's ``agent`` rule (:func:`controller.domain.liveness.agent_rule_ref`),
one per agent and kind that repeats; they are events, so a person closes them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller.domain import audit
from controller.domain.liveness import CONTACT_SUBJECT, ticket_on_agent
from controller.domain.policy import Applicable
from controller.domain.tickets import Book
from controller.judges.base import Observation
from controller.storage.models import Agent, AgentIncarnation, QuarantinedReport, Result, SequenceGap
from controller.storage.serialize import rfc3339
from controller.vocabulary import FAIL
from proto.vigil.v1 import report_pb2

log = logging.getLogger(__name__)

# The width of the incarnation columns; the agent's ids are 32 hex digits.
MAX_INCARNATION = 32
# What is kept of the agent's note on why an incarnation began.
MAX_NOTE = 2048
# What is kept of a refused report's bytes; its size and SHA-256 are those of the whole report.
MAX_QUARANTINE_BYTES = 2**20
# What is said of a refusal's reason (on the ticket, in the quarantine and in the Ack).
MAX_REASON = 1024
# The newest ranges a gap ticket's evidence lists.
GAP_EVIDENCE = 50

RECREATED_SUBJECT = "spool-recreated"
GAPS_SUBJECT = "sequence-gaps"
QUARANTINE_SUBJECT = "quarantined-reports"
# Subjects the controller observes itself: no check reports them, so no result settles them.
CONTROLLER_SUBJECTS = frozenset({CONTACT_SUBJECT, RECREATED_SUBJECT, GAPS_SUBJECT, QUARANTINE_SUBJECT})


def said(text: str, limit: int) -> str:
    """``text`` cut at ``limit`` characters, saying how long it was when cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [cut: {len(text)} characters]"


def shown(incarnation: str) -> str:
    """An incarnation as people read it: the empty one is the agent's spool before incarnations."""
    return incarnation or "(none: before spool incarnations)"


def incarnation_problem(incarnation: str) -> str | None:
    """Why ``incarnation`` cannot be kept as sent, or None. Cutting an id could merge two incarnations (and
    refuse the newer one's results as replays), so a bad one is refused, never shortened."""
    if len(incarnation) > MAX_INCARNATION:
        return f"spool incarnation is longer than {MAX_INCARNATION} characters ({len(incarnation)})"
    if not incarnation.isprintable():
        return f"spool incarnation {incarnation!r} holds control characters"
    return None


def begin_incarnation(s: Session, agent: Agent, incarnation: str, note: str, now: dt.datetime,
                      apps: Sequence[Applicable], last_contact: dt.datetime | None = None,
                      book: Book | None = None) -> bool:
    """Make ``incarnation`` (valid: see :func:`incarnation_problem`) the agent's current one; True when it
    changed. A new one is recorded, and is an event when the agent had one before or results were stored.
    ``last_contact``: when the agent was last heard of before this (for the ticket's evidence)."""
    if incarnation == agent.incarnation:
        return False
    previous, previous_max = agent.incarnation, agent.max_sequence
    known = s.get(AgentIncarnation, (agent.id, incarnation))
    if known is not None:
        # A spool the agent had before is back (a restored copy of it): its sequences go on from where
        # they stopped, and replay protection still holds within it.
        log.warning("agent %s: spool incarnation %s is back (after %s), its sequences go on from %d", agent.id,
                    shown(incarnation), shown(previous), known.max_sequence)
        audit.record(s, f"agent:{agent.id}", "agent.spool_resumed", "agent", agent.id,
                     {"incarnation": incarnation, "previous_incarnation": previous,
                      "max_sequence": known.max_sequence}, at=now)
        agent.incarnation, agent.max_sequence = incarnation, known.max_sequence
        return True
    before = s.get(AgentIncarnation, (agent.id, previous))
    had_any = before is not None or s.execute(
        select(AgentIncarnation.incarnation).where(AgentIncarnation.agent_id == agent.id).limit(1)).first() is not None
    previous_reports = before.reports if before is not None else _stored(s, agent.id, previous)
    if before is None and (previous_max or previous_reports):
        # Results stored before incarnations existed: their spool gets its row in the history too.
        s.add(AgentIncarnation(agent_id=agent.id, incarnation=previous, first_seen=agent.enrolled_at,
                               note="the agent's spool before it reported incarnations",
                               max_sequence=previous_max, reports=previous_reports))
    # Only rows stored before incarnations existed carry the empty one: a new non-empty id has none.
    top = 0 if incarnation else int(s.execute(select(func.max(Result.sequence)).where(
        Result.agent_id == agent.id, Result.incarnation == incarnation)).scalar() or 0)
    count = 0 if incarnation else _stored(s, agent.id, incarnation)
    s.add(AgentIncarnation(agent_id=agent.id, incarnation=incarnation, first_seen=now, note=note,
                           max_sequence=top, reports=count))
    agent.incarnation, agent.max_sequence = incarnation, top
    if not (previous or previous_max or had_any):
        log.info("agent %s: first spool incarnation %s", agent.id, shown(incarnation))
        return True
    evidence: dict[str, Any] = {
        "previous_incarnation": previous,
        "previous_max_sequence": previous_max,
        "previous_reports": previous_reports,
        "last_contact": rfc3339(last_contact) if last_contact is not None else None,
        "incarnation": incarnation,
        "note": note,
    }
    because = f"; the agent says: {note}" if note else ""
    message = (f"agent spool was recreated: results spooled before it and not delivered may be lost (spool "
               f"incarnation {shown(previous)} reached sequence {previous_max}, {previous_reports} result(s) stored; "
               f"the new one is {shown(incarnation)}{because})")
    log.warning("agent %s: %s", agent.id, message)
    audit.record(s, f"agent:{agent.id}", "agent.spool_recreated", "agent", agent.id, evidence, at=now)
    ticket_on_agent(s, agent, apps, [Observation(RECREATED_SUBJECT, FAIL, message, evidence)], now, book,
                    auto_resolve=False)
    return True


def _stored(s: Session, agent_id: str, incarnation: str) -> int:
    return int(s.execute(select(func.count()).select_from(Result).where(
        Result.agent_id == agent_id, Result.incarnation == incarnation)).scalar_one())


def record_gaps(s: Session, agent: Agent, apps: Sequence[Applicable], ranges: Sequence[tuple[str, int, int]],
                now: dt.datetime, book: Book | None = None) -> list[SequenceGap]:
    """Record ``ranges`` (incarnation, first, last) of sequences that never arrived, and ticket each."""
    rows = [SequenceGap(agent_id=agent.id, incarnation=inc, first=first, last=last, found_at=now, filled=0)
            for inc, first, last in ranges]
    s.add_all(rows)
    s.flush()
    recent = list(s.execute(select(SequenceGap).where(SequenceGap.agent_id == agent.id)
                            .order_by(SequenceGap.id.desc()).limit(GAP_EVIDENCE)).scalars())
    missing = int(s.execute(select(func.coalesce(func.sum(SequenceGap.last - SequenceGap.first + 1
                                                          - SequenceGap.filled), 0))
                            .where(SequenceGap.agent_id == agent.id)).scalar_one())
    evidence: dict[str, Any] = {"missing": missing, "gaps": [gap_json(g) for g in recent]}
    outcomes = []
    for row in rows:
        message = gap_message(row)
        log.warning("agent %s: %s", agent.id, message)
        outcomes.append(Observation(GAPS_SUBJECT, FAIL, message, evidence))
    ticket_on_agent(s, agent, apps, outcomes, now, book, auto_resolve=False)
    return rows


def gap_message(gap: SequenceGap) -> str:
    count = gap.last - gap.first + 1
    which = f"sequence {gap.first}" if count == 1 else f"sequences {gap.first}-{gap.last}"
    return (f"{which} of spool incarnation {shown(gap.incarnation)} never arrived: {count} result"
            f"{'' if count == 1 else 's'} missing")


def fill_gaps(s: Session, agent_id: str, incarnation: str, sequences: Sequence[int]) -> None:
    """Sequences below the highest received that arrive late (and are stored): each counts as filling the
    range it was missing from. One query for all of them."""
    gaps = list(s.execute(select(SequenceGap).where(
        SequenceGap.agent_id == agent_id, SequenceGap.incarnation == incarnation,
        SequenceGap.first <= max(sequences), SequenceGap.last >= min(sequences))).scalars())
    for seq in sequences:
        gap = next((g for g in gaps if g.first <= seq <= g.last), None)
        if gap is None:
            log.warning("agent %s: sequence %d of spool incarnation %s is below the highest received and was "
                        "never stored: stored now", agent_id, seq, shown(incarnation))
            continue
        gap.filled = min(gap.filled + 1, gap.last - gap.first + 1)
        log.warning("agent %s: sequence %d of spool incarnation %s arrived late and fills missing range #%d "
                    "(%d-%d, %d of %d arrived)", agent_id, seq, shown(incarnation), gap.id, gap.first, gap.last,
                    gap.filled, gap.last - gap.first + 1)


def quarantine(s: Session, agent: Agent, apps: Sequence[Applicable],
               refused: Sequence[tuple[report_pb2.Report, str, str]], now: dt.datetime,
               book: Book | None = None) -> list[QuarantinedReport]:
    """Keep ``refused`` reports (report, incarnation, reason) and ticket each; returns the rows."""
    rows = []
    for report, incarnation, reason in refused:
        raw = report.SerializeToString()
        rows.append(QuarantinedReport(
            agent_id=agent.id, incarnation=incarnation[:MAX_INCARNATION], sequence=str(report.sequence),
            check_id=report.check_id[:32], received_at=now, reason=reason, size=len(raw),
            sha256=hashlib.sha256(raw).hexdigest(), raw=raw[:MAX_QUARANTINE_BYTES]))
    s.add_all(rows)
    s.flush()
    outcomes = []
    for row, (report, _, _) in zip(rows, refused, strict=True):
        check = said(report.check_id, 32) or "(none)"
        message = f"report {row.sequence} of check {check} refused: {row.reason}; kept as quarantined report #{row.id}"
        log.warning("agent %s: %s", agent.id, message)
        outcomes.append(Observation(QUARANTINE_SUBJECT, FAIL, message, {
            "quarantined_report": row.id, "sequence": row.sequence, "check_id": row.check_id,
            "incarnation": row.incarnation, "reason": row.reason, "size": row.size, "sha256": row.sha256}))
    ticket_on_agent(s, agent, apps, outcomes, now, book, auto_resolve=False)
    return rows


# -- reading it back -----------------------------------------------------------------------------------


def counts(s: Session, agent_id: str) -> dict[str, int]:
    """How many incarnations, missing-sequence ranges and quarantined reports the agent has."""
    def n(model: Any) -> int:
        return int(s.execute(select(func.count()).select_from(model).where(model.agent_id == agent_id)).scalar_one())

    return {"incarnations": n(AgentIncarnation), "gaps": n(SequenceGap), "quarantined": n(QuarantinedReport)}


def incarnations(s: Session, agent_id: str, limit: int = 100) -> list[AgentIncarnation]:
    """The agent's spool incarnations, newest first."""
    return list(s.execute(select(AgentIncarnation).where(AgentIncarnation.agent_id == agent_id)
                          .order_by(AgentIncarnation.first_seen.desc(), AgentIncarnation.incarnation)
                          .limit(limit)).scalars())


def gaps(s: Session, agent_id: str, limit: int = 100) -> list[SequenceGap]:
    """The agent's missing-sequence ranges, newest first."""
    return list(s.execute(select(SequenceGap).where(SequenceGap.agent_id == agent_id)
                          .order_by(SequenceGap.id.desc()).limit(limit)).scalars())


def quarantined(s: Session, agent_id: str, limit: int = 100) -> list[QuarantinedReport]:
    """The agent's quarantined reports, newest first."""
    return list(s.execute(select(QuarantinedReport).where(QuarantinedReport.agent_id == agent_id)
                          .order_by(QuarantinedReport.id.desc()).limit(limit)).scalars())


def gap_json(g: SequenceGap) -> dict[str, Any]:
    return {"id": g.id, "incarnation": g.incarnation, "first": g.first, "last": g.last,
            "missing": g.last - g.first + 1 - g.filled, "filled": g.filled, "found_at": rfc3339(g.found_at)}


def incarnation_json(i: AgentIncarnation) -> dict[str, Any]:
    return {"incarnation": i.incarnation, "first_seen": rfc3339(i.first_seen), "note": i.note,
            "max_sequence": i.max_sequence, "reports": i.reports}
