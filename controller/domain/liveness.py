"""Liveness: agents silent too long become offline, then lost with a "device lost contact" ticket;
rules whose results stop coming become unknown.

An agent silent for ``offline_after`` is offline; silent longer than the smallest ``max_silence`` of
its ``agent`` rules (or the controller's default) it is lost and tickets (TPEx-CPA 3(8)4(2)); the
ticket resolves when heartbeats resume.

A rule with no result within twice its interval (plus a grace) cannot be judged: its ``check-status``
finding becomes unknown ("cannot judge: no result ... since ...") and tickets while the agent is online
(an offline or lost agent has its contact ticket already), and its passing findings become unknown
too, without tickets, so compliance never counts stale passes. A rule whose check the agent does not
run is unknown at once. The next result of the rule settles all of it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.baselines import BaselineDoc
from controller.domain.policy import Applicable, applicable_rules
from controller.domain.tickets import Book, RuleRef, apply_outcomes
from controller.judges import CHECK_STATUS_SUBJECT, judge_for
from controller.judges.agent import JUDGE as AGENT_JUDGE
from controller.judges.agent import allowed_silence_s, contact_rules
from controller.judges.base import Observation, cannot_judge, verdict
from controller.storage.models import Agent, Finding
from controller.vocabulary import PASS, UNKNOWN

CONTACT_SUBJECT = "contact"
AGENT_CHECK = AGENT_JUDGE.id
# A result may come up to this much after twice the rule's interval (a busy agent, a slow check).
STALE_GRACE_S = 120


def agent_rule_ref(apps: Sequence[Applicable]) -> RuleRef:
    """The rule the controller's own tickets on an agent go under (lost contact, a recreated spool, missing
    sequences, refused reports): the first ``agent`` rule that applies to it, or AGENT-CONTACT (high,
    TPEx-CPA 3(8)4(2)) when no baseline has one, so that such a ticket is never skipped for want of a rule."""
    contact = contact_rules(a.rule for a in apps)
    app = next((a for a in apps if contact and a.rule is contact[0]), None)
    return RuleRef.of(app) if app is not None else RuleRef(
        "AGENT-CONTACT", AGENT_CHECK, "high", ("TPEx-CPA 3(8)4(2)",), "", 0)


def ticket_on_agent(s: Session, agent: Agent, apps: Sequence[Applicable], outcomes: Sequence[Observation],
                    now: dt.datetime, book: Book | None = None, auto_resolve: bool = True) -> None:
    """Record observations the controller made itself about ``agent`` under :func:`agent_rule_ref`; they
    cover only their own subjects (``complete=False``). ``auto_resolve=False`` for events: a later pass
    does not undo them, a person closes their ticket."""
    apply_outcomes(s, agent.id, agent.hostname, agent_rule_ref(apps), outcomes, now, None, complete=False,
                   book=book, auto_resolve=auto_resolve)


def contact_outcome(s: Session, agent: Agent, back: bool, now: dt.datetime, docs: Sequence[BaselineDoc],
                    apps: Sequence[Applicable] | None = None) -> None:
    """Open (``back`` false) or resolve (``back`` true) the agent's lost-contact ticket. ``apps``: the rules
    that apply to the agent, when the caller has them already."""
    apps = applicable_rules(docs, agent.tags) if apps is None else apps
    since = agent.last_seen.isoformat(timespec="seconds") if agent.last_seen else "never"
    msg = "heartbeats resumed" if back else f"device lost contact (last heartbeat {since})"
    outcome = Observation(CONTACT_SUBJECT, verdict(back), msg, {"last_seen": since})
    ticket_on_agent(s, agent, apps, [outcome], now)


def check_liveness(
    s: Session, docs: Sequence[BaselineDoc], offline_after: dt.timedelta, default_lost_after_s: int, now: dt.datetime,
    applied_at: Mapping[str, dt.datetime] | None = None,
) -> dict[str, int]:
    """Mark silent agents offline, then lost (with a ticket) past the baseline's ``max_silence``; with
    ``applied_at`` (baseline name -> applied time), also make rules without recent results unknown."""
    changed = {"offline": 0, "lost": 0, "unknown": 0}
    for agent in s.execute(select(Agent).where(Agent.revoked_at.is_(None))).scalars():
        seen = agent.last_seen or agent.enrolled_at
        silence = now - seen
        apps = applicable_rules(docs, agent.tags)
        rules = [a.rule for a in apps]
        lost_after = dt.timedelta(seconds=allowed_silence_s(rules) or default_lost_after_s)
        if agent.status == "online" and silence > offline_after:
            agent.status = "offline"
            changed["offline"] += 1
        if agent.status in ("offline", "online") and silence > lost_after and agent.last_seen is not None:
            agent.status = "lost"
            changed["lost"] += 1
            contact_outcome(s, agent, False, now, docs, apps)
        if applied_at is not None:
            changed["unknown"] += stale_rules(s, agent, apps, applied_at, now)
    return changed


def _supported(agent: Agent) -> set[str] | None:
    """The check ids the agent said it runs; None when it said nothing (an agent before capabilities)."""
    ids = {str(c.get("check_id", "")) if isinstance(c, Mapping) else str(c) for c in agent.checks or []}
    return ids or None


def _since(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def stale_rules(
    s: Session, agent: Agent, rules: Sequence[Applicable], applied_at: Mapping[str, dt.datetime], now: dt.datetime,
) -> int:
    """Make the rules of ``agent`` that have had no result within their interval unknown; returns how many
    rules were newly marked. ``applied_at`` maps baseline names to when they were applied (a rule that
    never reported is counted from then, or from enrolment if later)."""
    supported = _supported(agent)
    marked = 0
    book: Book | None = None
    for app in rules:
        rule = app.rule
        last = _since((agent.last_results or {}).get(app.task_id))
        if supported is not None and rule.check not in supported:
            reason = f"the agent (version {agent.version or 'unknown'}) does not run the {rule.check} check"
        else:
            start = max(agent.enrolled_at, applied_at.get(app.baseline.name, agent.enrolled_at))
            if (now - (last or start)).total_seconds() <= 2 * rule.interval_s + STALE_GRACE_S:
                continue
            said = f"since {last.isoformat(timespec='seconds')}" if last else "since the rule applied"
            reason = f"no result of the {rule.check} check for {rule.id} {said} (it runs every {rule.interval_s} s)"
        status = s.execute(select(Finding.status).where(
            Finding.asset == agent.id, Finding.baseline == app.baseline.name, Finding.rule_id == rule.id,
            Finding.subject == CHECK_STATUS_SUBJECT)).scalar_one_or_none()
        if status == UNKNOWN:
            continue  # marked already (or the check reported an error): nothing new to say
        book = book if book is not None else Book(s, agent.id, now)  # read once, for the rules it marks
        # A lost or offline agent has its contact ticket already: its silent rules only record unknown.
        ref = RuleRef.of(app, None if agent.status == "online" else "record")
        outcomes = [cannot_judge(CHECK_STATUS_SUBJECT, reason, {"check": rule.check, "last_result": str(last or "")})]
        apply_outcomes(s, agent.id, agent.hostname, ref, outcomes, now, None, complete=False, book=book)
        if judge_for(rule.check).auto_resolve:
            # States, not events: a pass that is no longer confirmed is not a pass. No ticket per subject.
            passing = [subject for (baseline, rule_id, subject), f in book.findings.items()
                       if baseline == app.baseline.name and rule_id == rule.id and f.status == PASS]
            apply_outcomes(s, agent.id, agent.hostname, RuleRef.of(app, "record"),
                           [cannot_judge(sub, reason) for sub in passing], now, None, complete=False, book=book)
        marked += 1
    return marked
