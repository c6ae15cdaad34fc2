"""The ``av`` judge: each antivirus product's signature age and engine state."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field

from controller.baselines import Rule, StrictModel
from controller.judges.base import InvalidFacts, Judge, Observation, as_number
from controller.judges.items import per_item

_Path = Annotated[str, Field(min_length=1)]


class AvParams(StrictModel):
    """``clamav_dirs`` replaces where ClamAV databases are searched; ``defender_json`` is a file of
    ``Get-MpComputerStatus | ConvertTo-Json`` output read instead of asking PowerShell."""

    clamav_dirs: list[_Path] | None = None
    defender_json: _Path | None = None


def _note(item: Mapping[str, Any]) -> str:
    # The agent reports an installed product without databases with a huge age so that any max fails;
    # say what that number means rather than leave "1000000 hours" to the reader.
    never = not item.get("databases") and (as_number(item.get("signature_age_hours", 0)) or 0) >= 1e6
    return "no signature database found (never updated)" if never else ""


MAX_NAME = 512


class Av(Judge):
    id = "av"
    default_interval_s = 3600
    params_model = AvParams

    def validate(self, facts: dict[str, Any]) -> None:
        names = [str(p.get("name", "")) for p in facts.get("products", [])]
        for name in names:
            if len(name) > MAX_NAME:  # the name is the finding's subject, a column of 512 characters
                raise InvalidFacts(f"av product name {name[:40]!r}… is longer than {MAX_NAME} characters")
        if "" in names or len(names) != len(set(names)):
            raise InvalidFacts(f"av products need unique, non-empty names, got {names}")
        for p in facts.get("products", []):
            age = p.get("signature_age_hours", 0)
            # A negative age is a fact (the host's clock is behind the signature builder's), NaN is not.
            if not isinstance(age, int | float) or not math.isfinite(age):
                raise InvalidFacts(f"av product {p.get('name')!r}: signature_age_hours {age!r} is not a valid age")

    def evaluate(self, rule: Rule, facts: Mapping[str, Any], changes: Mapping[str, str]) -> list[Observation]:
        return per_item(rule, facts, "products", "no antivirus product found on this host", _note)


JUDGE = Av()
