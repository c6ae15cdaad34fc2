"""Collecting part of the ``ntp`` check on Windows: the W32Time service and ``w32tm /query /status``.

A stub: the parser reads the English output only (w32tm translates its labels), and w32tm's phase
offset is not used because its sign is not documented, so on Windows the offset comes from SNTP.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo

import psutil

from checks.ntp.linux import CommandFailed, run
from checks.ntp.parse import Daemon, DaemonStatus, NtpParseError, NtpSource

W32TM_STATUS = ("w32tm", "/query", "/status")
DAEMON = "w32time"
# What w32tm names as its source when it has no network time at all.
_LOCAL_SOURCES = ("Local CMOS Clock", "Free-running System Clock", "VM IC Time Synchronization Provider")
_SECONDS = re.compile(r"^([-+]?[0-9.]+)s$")


def _seconds_ms(value: str, what: str) -> float:
    match = _SECONDS.match(value.strip())
    if match is None:
        raise NtpParseError(f"w32tm /query /status {what}: expected seconds like 0.0312500s, got {value!r}")
    return float(match.group(1)) * 1000


def _sync_time(value: str, local_tz: tzinfo) -> datetime | None:
    try:
        return datetime.strptime(value, "%m/%d/%Y %I:%M:%S %p").replace(tzinfo=local_tz).astimezone(UTC)
    except ValueError:
        return None  # "unspecified", or a date in another locale's format: unknown rather than guessed


def parse_w32tm_status(text: str, local_tz: tzinfo = UTC) -> DaemonStatus:
    """``w32tm /query /status`` (English). Its sync time is in the host's local time, hence ``local_tz``."""
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            pairs[key.strip()] = value.strip()
    if "Leap Indicator" not in pairs or "Stratum" not in pairs:
        raise NtpParseError(f"w32tm /query /status: no 'Leap Indicator:' or 'Stratum:' in {text[:120]!r}")
    leap = int(pairs["Leap Indicator"].split("(")[0])
    stratum = int(pairs["Stratum"].split()[0])
    # ",0x9" after a source name is the NtpServer flags word, not part of the name.
    source = pairs.get("Source", "").split(",")[0].strip()
    synchronized = leap != 3 and 0 < stratum < 16 and source not in _LOCAL_SOURCES
    last_sync = _sync_time(pairs.get("Last Successful Sync Time", ""), local_tz)
    return DaemonStatus(
        synchronized=synchronized,
        stratum=stratum,
        reference=source if synchronized else "",
        last_sync=last_sync,
        root_delay_ms=_seconds_ms(pairs.get("Root Delay", "0s"), "Root Delay"),
        root_dispersion_ms=_seconds_ms(pairs.get("Root Dispersion", "0s"), "Root Dispersion"),
        sources=(NtpSource(address=source, selected=synchronized, state="selected" if synchronized else "rejected"),)
        if source
        else (),
    )


def collect_daemon(warnings: list[str]) -> Daemon:
    get_service = getattr(psutil, "win_service_get", None)  # exists only on Windows
    if get_service is None:
        return Daemon()
    try:
        running = get_service(DAEMON).status() == "running"
    except psutil.Error:
        return Daemon()
    if not running:
        return Daemon(name=DAEMON, running=False)
    try:
        local_tz = datetime.now().astimezone().tzinfo or UTC
        return Daemon(name=DAEMON, running=True, status=parse_w32tm_status(run(W32TM_STATUS), local_tz))
    except (CommandFailed, NtpParseError) as exc:
        warnings.append(f"{DAEMON} runs but its state could not be read: {exc}")
        return Daemon(name=DAEMON, running=True)
