"""The ``eol`` judge: each OS, package and runtime against its lifecycle in the controller's dataset.

:meth:`Eol.prepare` enriches the facts with the controller's own EOL dataset before they are stored
and judged (the agent only says what is installed), so the items judged here carry ``eol``,
``days_to_eol``, ``supported``, ``known`` and ``dataset`` (which dataset placed them); every message
names that dataset, and says when the OS was judged through its ID_LIKE parent or is a rolling release.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from controller import eoldata
from controller.baselines import AbsolutePath, Rule, StrictModel
from controller.judges.base import Context, InvalidFacts, Judge, Observation
from controller.judges.items import per_item


class EolParams(StrictModel):
    """``root``: the filesystem root inspected ("/" on a live host); ``extra_paths``: more binaries to probe."""

    root: AbsolutePath = "/"
    extra_paths: list[AbsolutePath] = Field(default_factory=list)


def note(item: Mapping[str, Any]) -> str:
    """What a finding says besides the rule's verdict: fallback, rolling release, the dataset used."""
    parts = [str(item.get("judged_as") or "")]
    if item.get("cycle") == "rolling" and item.get("known"):
        parts.append(eoldata.ROLLING_REASON)
    if item.get("eol") and item.get("eol_date"):
        parts.append(f"end of life since {item['eol_date']}")
    if item.get("dataset"):
        parts.append(f"dataset: {item['dataset']}")
    return "; ".join(p for p in parts if p)


class Eol(Judge):
    id = "eol"
    default_interval_s = 86400
    params_model = EolParams

    def validate(self, facts: dict[str, Any]) -> None:
        problems = eoldata.validate_facts(facts)
        if problems:
            raise InvalidFacts("; ".join(problems[:5]))

    def prepare(self, facts: dict[str, Any], ctx: Context) -> tuple[dict[str, Any], dict[str, str]]:
        # The controller judges with its own EOL dataset (fields 9-18), whatever the agent sent.
        dataset = ctx.eol_dataset
        if not facts or not isinstance(dataset, eoldata.Dataset):
            return facts, {}
        return eoldata.enrich(facts, dataset, ctx.today), {}

    def evaluate(self, rule: Rule, facts: Mapping[str, Any], changes: Mapping[str, str]) -> list[Observation]:
        return per_item(rule, facts, "items", "no operating system or software was reported", note=note)


JUDGE = Eol()
