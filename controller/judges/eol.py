"""The ``eol`` judge: each OS, package and runtime against its lifecycle in the controller's dataset.

Ingest enriches the facts with the controller's own EOL dataset before judging (the agent only says
what is installed), so the items judged here carry ``eol``, ``days_to_eol``, ``supported``, ``known``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.baselines import Rule
from controller.domain import eol as _eol
from controller.judges.base import Context, InvalidFacts, Judge, Observation
from controller.judges.items import per_item


class Eol(Judge):
    id = "eol"
    default_interval_s = 86400

    def validate(self, facts: dict[str, Any]) -> None:
        problems = _eol.validate_facts(facts)
        if problems:
            raise InvalidFacts("; ".join(problems[:5]))

    def prepare(self, facts: dict[str, Any], ctx: Context) -> tuple[dict[str, Any], dict[str, str]]:
        # The controller judges with its own EOL dataset (fields 9-18), whatever the agent sent.
        if not facts or ctx.eol_dataset is None:
            return facts, {}
        return _eol.enrich(facts, ctx.eol_dataset, ctx.today), {}

    def evaluate(self, rule: Rule, facts: Mapping[str, Any], changes: Mapping[str, str]) -> list[Observation]:
        return per_item(rule, facts, "items", "no operating system or software was reported")


JUDGE = Eol()
