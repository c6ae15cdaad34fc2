"""Liveness: agents silent too long become offline, then lost with a "device lost contact" ticket.

An agent silent for ``offline_after`` is offline; silent longer than the smallest ``max_silence`` of
its ``agent`` rules (or the controller's default) it is lost and tickets (TPEx-CPA 3(8)4(2)); the
ticket resolves when heartbeats resume.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.baselines import BaselineDoc
from controller.domain.policy import applicable_rules
from controller.domain.tickets import Outcome, RuleRef, apply_outcomes
from controller.judges.agent import allowed_silence_s
from controller.storage.models import Agent

CONTACT_SUBJECT = "contact"


def contact_outcome(s: Session, agent: Agent, back: bool, now: dt.datetime, docs: Sequence[BaselineDoc]) -> None:
    """Open (``back`` false) or resolve (``back`` true) the agent's lost-contact ticket."""
    rules = [a for a in applicable_rules(docs, agent.tags) if a.rule.check == "agent"]
    rule_id, severity, baseline, version = "AGENT-CONTACT", "high", "", 0
    refs: tuple[str, ...] = ("TPEx-CPA 3(8)4(2)",)
    if rules:
        app = rules[0]
        rule_id, severity, refs = app.rule.id, app.rule.severity, tuple(app.rule.refs)
        baseline, version = app.baseline.name, app.baseline.version
    ref = RuleRef(rule_id, "agent", severity, refs, baseline, version)
    since = agent.last_seen.isoformat(timespec="seconds") if agent.last_seen else "never"
    msg = "heartbeats resumed" if back else f"device lost contact (last heartbeat {since})"
    outcome = Outcome(CONTACT_SUBJECT, back, msg, {"last_seen": since})
    apply_outcomes(s, agent.id, agent.hostname, ref, [outcome], now, None, complete=False)


def check_liveness(
    s: Session, docs: Sequence[BaselineDoc], offline_after: dt.timedelta, default_lost_after_s: int, now: dt.datetime
) -> dict[str, int]:
    """Mark silent agents offline, then lost (with a ticket) past the baseline's ``max_silence``."""
    changed = {"offline": 0, "lost": 0}
    for agent in s.execute(select(Agent).where(Agent.revoked_at.is_(None))).scalars():
        seen = agent.last_seen or agent.enrolled_at
        silence = now - seen
        rules = [a.rule for a in applicable_rules(docs, agent.tags)]
        lost_after = dt.timedelta(seconds=allowed_silence_s(rules) or default_lost_after_s)
        if agent.status == "online" and silence > offline_after:
            agent.status = "offline"
            changed["offline"] += 1
        if agent.status in ("offline", "online") and silence > lost_after and agent.last_seen is not None:
            agent.status = "lost"
            changed["lost"] += 1
            contact_outcome(s, agent, False, now, docs)
    return changed
