"""Fleet numbers for the dashboard: compliance snapshots and ticket trends.

``take_snapshot`` is meant for the controller's periodic round (it adds one ``ComplianceSnapshot`` row in
the caller's transaction); ``take_snapshot_if_due`` does so only when the last one is older than
``every``, so the round can call it each time. The dashboard computes the current point live, so it is
right even before the first snapshot.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller import vocabulary
from controller.domain.tickets import ACTIVE
from controller.storage.models import Agent, ComplianceSnapshot, Finding, Ticket

__all__ = ["SEVERITIES", "DailyCount", "current", "daily_tickets", "history", "take_snapshot",
           "take_snapshot_if_due"]

SEVERITIES = vocabulary.SEVERITIES
AGENT_STATUSES = ("online", "offline", "lost")
SNAPSHOT_EVERY = dt.timedelta(minutes=10)


def current(session: Session, now: dt.datetime) -> ComplianceSnapshot:
    """The fleet now, as an unsaved snapshot: findings passing/total, agents by status (revoked agents
    left out), open tickets by severity."""
    passing = total = unknown = 0
    for status, n in session.execute(select(Finding.status, func.count()).group_by(Finding.status)):
        total += int(n)
        passing += int(n) if status == vocabulary.PASS else 0
        unknown += int(n) if status == vocabulary.UNKNOWN else 0
    agents = {s: 0 for s in AGENT_STATUSES}
    for status, n in session.execute(select(Agent.status, func.count()).where(Agent.revoked_at.is_(None))
                                     .group_by(Agent.status)):
        agents[str(status)] = agents.get(str(status), 0) + int(n)
    tickets = {s: 0 for s in SEVERITIES}
    for sev, n in session.execute(select(Ticket.severity, func.count()).where(Ticket.status.in_(ACTIVE))
                                  .group_by(Ticket.severity)):
        tickets[str(sev)] = tickets.get(str(sev), 0) + int(n)
    return ComplianceSnapshot(at=now.astimezone(dt.UTC), findings_total=total, findings_passing=passing,
                              findings_unknown=unknown,
                              agents=agents, open_tickets=tickets)


def compliance_pct(snap: ComplianceSnapshot) -> float | None:
    """Passing findings / all findings, in percent; ``None`` when nothing was evaluated yet. Findings the
    controller could not judge count in the total and never as passing."""
    if not snap.findings_total:
        return None
    return 100.0 * snap.findings_passing / snap.findings_total


def take_snapshot(session: Session, now: dt.datetime) -> ComplianceSnapshot:
    """Record the fleet's state at ``now`` (added to ``session``; the caller commits)."""
    snap = current(session, now)
    if session.get(ComplianceSnapshot, snap.at) is not None:
        snap.at = snap.at + dt.timedelta(microseconds=1)
    session.add(snap)
    session.flush()
    return snap


def take_snapshot_if_due(session: Session, now: dt.datetime, every: dt.timedelta = SNAPSHOT_EVERY
                         ) -> ComplianceSnapshot | None:
    last = session.execute(select(func.max(ComplianceSnapshot.at))).scalar_one_or_none()
    if last is not None:
        last = last if last.tzinfo else last.replace(tzinfo=dt.UTC)
        if now - last < every:
            return None
    return take_snapshot(session, now)


def history(session: Session, now: dt.datetime, days: int = 14, points: int = 200) -> list[ComplianceSnapshot]:
    """Snapshots of the last ``days``, thinned to about ``points``, then the live point."""
    since = now - dt.timedelta(days=days)
    rows = list(session.execute(select(ComplianceSnapshot).where(ComplianceSnapshot.at >= since)
                                .order_by(ComplianceSnapshot.at)).scalars())
    if len(rows) > points:
        stride = len(rows) / points
        rows = [rows[int(i * stride)] for i in range(points)]
    return [*rows, current(session, now)]


@dataclass(frozen=True)
class DailyCount:
    day: dt.date
    opened: int
    resolved: int


def daily_tickets(session: Session, now: dt.datetime, days: int = 14) -> list[DailyCount]:
    """Tickets opened (first seen) and resolved (resolved, closed or false positive) per UTC day."""
    today = now.astimezone(dt.UTC).date()
    start = today - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(start, dt.time(), dt.UTC)
    opened: Counter[dt.date] = Counter()
    resolved: Counter[dt.date] = Counter()
    for (first,) in session.execute(select(Ticket.first_seen).where(Ticket.first_seen >= since)):
        opened[first.astimezone(dt.UTC).date()] += 1
    for (done,) in session.execute(select(Ticket.resolved_at).where(Ticket.resolved_at >= since)):
        if done is not None:
            resolved[done.astimezone(dt.UTC).date()] += 1
    return [DailyCount(d, opened[d], resolved[d]) for d in (start + dt.timedelta(days=i) for i in range(days))]
