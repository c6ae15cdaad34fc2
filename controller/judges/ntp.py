"""The ``ntp`` judge: clock synchronisation and the measured offset, in the generic fact form."""

from __future__ import annotations

import math
from typing import Any

from controller.judges.base import InvalidFacts, Judge


class Ntp(Judge):
    id = "ntp"
    default_interval_s = 300

    def validate(self, facts: dict[str, Any]) -> None:
        for key in ("offset_ms", "daemon_offset_ms", "root_delay_ms", "root_dispersion_ms", "seconds_since_sync"):
            value = facts.get(key, 0)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidFacts(f"ntp {key} {value!r} is not a finite number")
        if facts.get("offset_source", "") not in ("", "sntp", "daemon"):
            raise InvalidFacts(f"ntp offset_source {facts.get('offset_source')!r} is not sntp, daemon or empty")


JUDGE = Ntp()
