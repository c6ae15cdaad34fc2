"""The ``agent`` judge: the agent's own spool (dropped results); ``max_silence`` is judged by liveness."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from common.durations import parse_duration
from controller.baselines import Rule
from controller.judges.base import Judge, Observation, TicketView, as_int, verdict


def _agent(rule: Rule, facts: Mapping[str, Any]) -> list[Observation]:
    # max_silence is judged from missing heartbeats by the controller, not from a result: a silent
    # agent sends none. Only the spool's own count of dropped results is in the facts.
    limit_spec = rule.expect.get("dropped_records")
    if not isinstance(limit_spec, Mapping):
        return []
    limit = as_int(limit_spec.get("max", 0))
    dropped = as_int(facts.get("dropped_records", 0))
    evidence = {
        "dropped_records": dropped,
        "max": limit,
        "spool_depth": as_int(facts.get("spool_depth", 0)),
        "spool_bytes": as_int(facts.get("spool_bytes", 0)),
        "version": str(facts.get("version", "")),
    }
    passed = dropped <= limit
    if passed:
        message = f"the agent's spool dropped {dropped} result(s); {rule.id} allows at most {limit}"
    else:
        message = (
            f"the agent's spool dropped {dropped} result(s) since the agent started, more than the {limit} "
            f"{rule.id} allows: results were lost while the controller was unreachable"
        )
    return [Observation("spool", verdict(passed), message, evidence)]


def contact_rules(rules: Iterable[Rule]) -> list[Rule]:
    """The rules that judge an agent's contact (its ``agent`` rules): a lost agent tickets under the first."""
    return [r for r in rules if r.check == AgentSelf.id]


def allowed_silence_s(rules: Iterable[Rule]) -> int | None:
    """The shortest ``max_silence`` any agent rule allows, in seconds; None when no rule sets one."""
    limits = [
        parse_duration(str(r.expect["max_silence"])) for r in contact_rules(rules) if "max_silence" in r.expect
    ]
    return min(limits, default=None)


class AgentSelf(Judge):
    id = "agent"
    default_interval_s = 60

    def evaluate(self, rule: Rule, facts: Mapping[str, Any], changes: Mapping[str, str]) -> list[Observation]:
        return _agent(rule, facts)

    def asset_state(self, facts: Mapping[str, Any]) -> dict[str, int]:
        if not facts:
            return {}
        return {"spool_depth": as_int(facts.get("spool_depth", 0)),
                "dropped_records": as_int(facts.get("dropped_records", 0))}

    def hint(self, ticket: TicketView) -> str | None:
        return None


JUDGE = AgentSelf()
