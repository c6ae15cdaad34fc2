"""Small readers the platform parsers share: uptimes, dated stamps, key/value blocks, numbers."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from checks.device.errors import DeviceParseError

_UNIT_SECONDS = {"year": 365 * 86400, "week": 7 * 86400, "day": 86400, "hour": 3600, "minute": 60, "min": 60,
                 "second": 1, "sec": 1}
_UPTIME_PART = re.compile(r"(\d+)\s*(year|week|day|hour|minute|min|second|sec)s?(?:\(s\))?", re.IGNORECASE)
_CLOCK = re.compile(r"\b(\d+):(\d\d):(\d\d)\b")


def uptime_seconds(text: str) -> int | None:
    """"1 year, 12 weeks, 3 days, 4 hours, 21 minutes", "12 day(s), 3 hour(s)", "12 days, 3:04:05"."""
    total = 0
    found = False
    for number, unit in _UPTIME_PART.findall(text):
        total += int(number) * _UNIT_SECONDS[unit.lower()]
        found = True
    clock = _CLOCK.search(text)
    if clock:
        hours, minutes, seconds = (int(g) for g in clock.groups())
        total += hours * 3600 + minutes * 60 + seconds
        found = True
    return total if found else None


# Abbreviations devices print after a time; an ambiguous one (IST, CST in Asia) is left unplaced.
_ZONES = {
    "UTC": 0, "GMT": 0, "Z": 0, "WET": 0, "WEST": 1, "CET": 1, "CEST": 2, "EET": 2, "EEST": 3, "MSK": 3,
    "PST": -8, "PDT": -7, "MST": -7, "MDT": -6, "CDT": -5, "EST": -5, "EDT": -4, "AKST": -9, "AKDT": -8,
    "HST": -10, "JST": 9, "KST": 9, "HKT": 8, "SGT": 8, "AEST": 10, "AEDT": 11, "NZST": 12, "NZDT": 13,
}
_STAMP_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y-%m-%d",
                  "%Y/%m/%d")


def stamp_utc(text: str, default_zone: str | None = None) -> datetime | None:
    """``2023/10/22 14:01:21 PDT`` or (with ``default_zone``) ``2023-10-23 20:53`` in UTC, else None."""
    text = text.strip()
    parts = text.rsplit(" ", 1)
    zone = default_zone
    if len(parts) == 2 and parts[1].isalpha():
        text, zone = parts[0], parts[1].upper()
    if zone is None or zone not in _ZONES:
        return None
    for fmt in _STAMP_FORMATS:
        try:
            naive = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return (naive - timedelta(hours=_ZONES[zone])).replace(tzinfo=UTC)
    return None


def key_values(lines: Iterable[str], sep: str = ":") -> dict[str, str]:
    """``key: value`` lines; the first occurrence of a key wins, keys stripped, values stripped."""
    out: dict[str, str] = {}
    for line in lines:
        key, found, value = line.partition(sep)
        key = key.strip()
        if found and key and key not in out:
            out[key] = value.strip()
    return out


def number(value: str, platform: str, command: str, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DeviceParseError(platform, command, f"a number for {what}, got {value!r}") from None


def first(pattern: re.Pattern[str], lines: Iterable[str]) -> re.Match[str] | None:
    for line in lines:
        match = pattern.search(line)
        if match:
            return match
    return None


def none_if_blank(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value if value and value.lower() not in ("unknown", "n/a", "none", "not available") else None
