"""The ``agent`` judge: the agent's own spool (dropped results); ``max_silence`` is judged by liveness.

An agent with spool incarnations collects again what an overflow dropped (it re-scans the fim roots that
lost events and runs the other tasks again once the spool has room): its ``spool`` finding fails while
``dropped_records`` (the current overflow episode) is above the rule's ``max`` and ``pending_recovery``
tasks are still to report, and passes (resolving its ticket) once none is. An older agent's count only
grows, so there a drop fails for as long as the agent reports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field, model_validator

from controller.baselines import Duration, Rule, StrictModel, WholeNumber, duration_s, fail
from controller.judges.base import Judge, Observation, TicketView, as_int, verdict

# Evidence key of a pass that ends an event (with the ``episode`` key naming which): the failure to record
# first when the finding has not recorded that event (controller.domain.ingest).
UNREPORTED_FAILURE = "unreported_failure"


class _AtMost(StrictModel):
    max: WholeNumber = Field(ge=0)


class AgentExpect(StrictModel):
    max_silence: Duration | None = None
    dropped_records: _AtMost | None = None

    @model_validator(mode="after")
    def _something(self) -> AgentExpect:
        if self.max_silence is None and self.dropped_records is None:
            raise fail("give max_silence, dropped_records: {max: N}, or both")
        return self


class AgentParams(StrictModel):
    """The agent's self check takes no parameters."""


def _agent(rule: Rule, facts: Mapping[str, Any]) -> list[Observation]:
    # max_silence is judged from missing heartbeats by the controller, not from a result: a silent
    # agent sends none. Only the spool's own counts of dropped results are in the facts.
    limit_spec = rule.expect.get("dropped_records")
    if not isinstance(limit_spec, Mapping):
        return []
    limit = as_int(limit_spec.get("max", 0))
    dropped = as_int(facts.get("dropped_records", 0))
    pending = as_int(facts.get("pending_recovery", 0))
    incarnation = str(facts.get("spool_incarnation", ""))
    evidence = {
        "dropped_records": dropped,
        "dropped_total": as_int(facts.get("dropped_total", 0)),
        "pending_recovery": pending,
        "quarantined_records": as_int(facts.get("quarantined_records", 0)),
        "spool_incarnation": incarnation,
        "max": limit,
        "spool_depth": as_int(facts.get("spool_depth", 0)),
        "spool_bytes": as_int(facts.get("spool_bytes", 0)),
        "version": str(facts.get("version", "")),
    }
    if not incarnation:
        # An agent from before spool incarnations does not collect dropped results again: its count is
        # all there is to judge, and a drop stays a failure.
        if dropped <= limit:
            message = f"the agent's spool dropped {dropped} result(s); {rule.id} allows at most {limit}"
            return [Observation("spool", verdict(True), message, evidence)]
        message = (
            f"the agent's spool dropped {dropped} result(s) since the agent started, more than the {limit} "
            f"{rule.id} allows: results were lost while the controller was unreachable"
        )
        return [Observation("spool", verdict(False), message, evidence)]
    if dropped <= limit:
        message = f"the agent's spool dropped {dropped} result(s); {rule.id} allows at most {limit}"
        return [Observation("spool", verdict(True), message, evidence)]
    total = as_int(facts.get("dropped_total", 0))
    since = f" ({total} since this spool began)" if total > dropped else ""
    # Which overflow this is: the total only grows within a spool, with each drop.
    evidence["episode"] = f"{incarnation}:{total}"
    if pending == 0:
        # The agent collected again what the tasks that lost results observe (a fim root re-scanned, any
        # other check run again): the evidence is whole again, and the ticket resolves saying so. When the
        # controller never heard of this overflow while it lasted (its health results were dropped too),
        # ingest records the failure first, so that the drop is ticketed all the same.
        evidence[UNREPORTED_FAILURE] = (
            f"the agent's spool dropped {dropped} result(s){since} while it was full, more than the {limit} "
            f"{rule.id} allows; they were collected again before the controller heard of it")
        message = f"{dropped} results dropped while the spool was full were collected again"
        return [Observation("spool", verdict(True), message, evidence)]
    message = (
        f"the agent's spool dropped {dropped} result(s){since} while it was full, more than the {limit} "
        f"{rule.id} allows; {pending} task(s) still to collect them again"
    )
    return [Observation("spool", verdict(False), message, evidence)]


def contact_rules(rules: Iterable[Rule]) -> list[Rule]:
    """The rules that judge an agent's contact (its ``agent`` rules): a lost agent tickets under the first."""
    return [r for r in rules if r.check == AgentSelf.id]


def allowed_silence_s(rules: Iterable[Rule]) -> int | None:
    """The shortest ``max_silence`` any agent rule allows, in seconds; None when no rule sets one."""
    limits = [
        duration_s(str(r.expect["max_silence"])) for r in contact_rules(rules) if "max_silence" in r.expect
    ]
    return min(limits, default=None)


class AgentSelf(Judge):
    id = "agent"
    default_interval_s = 60
    params_model = AgentParams
    expect_model = AgentExpect

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
