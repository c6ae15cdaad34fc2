"""Durations as written in baselines and flags: ``30s``, ``5m``, ``1h``, ``2d``."""

from __future__ import annotations

import re

from common.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")


def parse_duration(text: str) -> int:
    """Return seconds for ``text`` (e.g. ``"5m"`` -> 300); raise UsageError naming the bad value."""
    m = _RE.match(str(text))
    if not m:
        raise UsageError(f"invalid duration {text!r}: write a number and a unit s, m, h or d (e.g. 30s, 5m, 1h)")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds <= 0:
        raise UsageError(f"invalid duration {text!r}: must be greater than zero")
    return seconds
