"""Juniper Junos OS (``juniper_junos``): MX, EX, QFX, SRX, vSRX and vMX; Virtual Chassis and clusters.

``version`` is the ``Junos:`` value (15.1 and later), else the release in the brackets of
``JUNOS Software Release [..]`` or ``JUNOS Base OS boot [..]`` (older releases): ``19.4R3-S1.3``,
``12.3X48-D105.4``. A Virtual Chassis or chassis cluster prints one block per member; the first
member's block is the device's.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from checks.device._text import first
from checks.device.clean import clean_lines
from checks.device.config import normalise
from checks.device.errors import DeviceParseError
from checks.device.model import Facts, InventoryItem, NtpPeer, NtpState

PLATFORM = "juniper_junos"

_JUNOS = re.compile(r"^\s*Junos:\s+(?P<v>\S+)", re.IGNORECASE)
# Packages whose bracket holds the release (before 15.1); "JUNOS OS Kernel 64-bit [20201023...]" holds a build.
_BRACKETED = re.compile(r"^\s*JUNOS (?:Software Release|Base OS boot|EX\s+Software Suite|Base OS Software Suite|"
                        r"Kernel Software Suite)\s*\[(?P<v>[^\]]+)\]", re.IGNORECASE)
_HOSTNAME = re.compile(r"^\s*Hostname:\s*(?P<host>\S+)", re.IGNORECASE)
_MODEL = re.compile(r"^\s*Model:\s*(?P<model>\S+)", re.IGNORECASE)
_MEMBER = re.compile(r"^\s*(?:fpc\d+|node\d+|re\d+|localre|member\d+|lcc\d+-re\d+|sfc\d+-re\d+)\s*:\s*$",
                     re.IGNORECASE)


def _first_block(lines: list[str]) -> list[str]:
    """The lines of the first member's block ("fpc0:", "node0:", ...) or all lines when there is none."""
    starts = [i for i, line in enumerate(lines) if _MEMBER.match(line)]
    if len(starts) < 2:
        return lines
    return lines[starts[0]:starts[1]]


def parse_show_version(text: str) -> Facts:
    """``show version`` (also ``show version detail``'s first lines), single device or first member."""
    lines = _first_block(clean_lines(text, "show version"))
    version = first(_JUNOS, lines) or first(_BRACKETED, lines)
    if version is None:
        raise DeviceParseError(PLATFORM, "show version", "a line 'Junos: X' or 'JUNOS Software Release [X]'; "
                               "found none")
    host = first(_HOSTNAME, lines)
    model = first(_MODEL, lines)
    return Facts(
        platform=PLATFORM,
        command="show version",
        vendor="Juniper",
        os_name="Junos",
        version=version["v"],
        hostname=host["host"] if host else None,
        model=model["model"] if model else None,
    )


_HW_COLUMNS = ("Item", "Version", "Part number", "Serial number", "Description")


def _hardware_rows(lines: list[str]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    columns: list[tuple[str, int]] = []
    for line in lines:
        if line.lstrip().startswith("Item") and "Serial number" in line:
            columns = [(name, line.index(name)) for name in _HW_COLUMNS if name in line]
            continue
        if not columns or not line.strip() or _MEMBER.match(line) or line.startswith("Hardware inventory"):
            continue
        row: dict[str, str] = {}
        # A word belongs to the column it starts under ("Routing Engine 0 REV 17": "REV" starts the Version).
        for m in re.finditer(r"\S+", line):
            column = columns[0][0]
            for name, start in columns:
                if m.start() + 1 >= start:
                    column = name
            row[column] = f"{row[column]} {m.group()}" if column in row else m.group()
        rows.append(row)
    return rows


def parse_show_chassis_hardware(text: str) -> Facts:
    """``show chassis hardware``: the chassis serial and every part with one."""
    lines = clean_lines(text, "show chassis hardware")
    rows = _hardware_rows(lines)
    if not rows:
        raise DeviceParseError(PLATFORM, "show chassis hardware", "a table headed 'Item Version Part number Serial "
                               "number Description'")
    items = tuple(InventoryItem(name=r.get("Item", ""), description=r.get("Description", ""),
                                pid=r.get("Part number") or None, serial=r.get("Serial number") or None)
                  for r in rows)
    chassis = next((i for i in items if i.name.lower() == "chassis"), None)
    return Facts(platform=PLATFORM, command="show chassis hardware",
                 model=chassis.description or None if chassis else None,
                 serial=chassis.serial if chassis else None, inventory=items)


_MAX_RV_LINE = 1024


def parse_show_ntp_status(text: str) -> Facts:
    """``show ntp status``: ntpd's system variables as ``ntpq -c rv`` prints them (offset in ms)."""
    from checks.ntp.parse import NtpParseError, parse_ntpq_rv

    lines = clean_lines(text, "show ntp status")
    if any("timed out, nothing received" in line for line in lines):
        # ntpd does not answer its own query: nothing keeps the clock.
        return Facts(platform=PLATFORM, command="show ntp status", ntp=NtpState(synchronized=False))
    # Only the variable lines go to the ntpq reader, and none longer than ntpd prints one.
    variables = [line for line in lines if "=" in line and len(line) <= _MAX_RV_LINE]
    if not any("stratum=" in line for line in variables):
        raise DeviceParseError(PLATFORM, "show ntp status", "ntpd system variables (status=..., leap=..., "
                               "stratum=...); found no stratum=")
    try:
        status = parse_ntpq_rv("\n".join(variables))
    except NtpParseError as exc:
        raise DeviceParseError(PLATFORM, "show ntp status", f"ntpd system variables (leap=, stratum=): {exc}") from None
    return Facts(platform=PLATFORM, command="show ntp status", ntp=NtpState(
        synchronized=status.synchronized,
        offset_ms=status.offset_ms,
        stratum=status.stratum if status.stratum else None,
        reference=status.reference or None if status.synchronized else None,
    ))


def ntpq_peers(text: str, platform: str, command: str) -> NtpState:
    """An ``ntpq -p`` style peer table (Junos and EOS ``show ntp associations``) as NTP state."""
    from checks.ntp.parse import NtpParseError, parse_ntpq_peers

    try:
        sources = parse_ntpq_peers(text)
    except NtpParseError as exc:
        raise DeviceParseError(platform, command, f"an ntpq peer table ('remote refid st t when poll reach delay "
                               f"offset jitter'): {exc}") from None
    peers = tuple(NtpPeer(address=s.address, stratum=s.stratum, offset_ms=s.offset_ms, delay_ms=s.delay_ms,
                          selected=s.selected, state=s.state) for s in sources)
    chosen = next((p for p in peers if p.selected), None)
    return NtpState(synchronized=chosen is not None, offset_ms=chosen.offset_ms if chosen else None,
                    stratum=chosen.stratum + 1 if chosen and chosen.stratum is not None else None,
                    reference=chosen.address if chosen else None, sources=peers)


def parse_show_ntp_associations(text: str) -> Facts:
    lines = clean_lines(text, "show ntp associations")
    return Facts(platform=PLATFORM, command="show ntp associations",
                 ntp=ntpq_peers("\n".join(lines), PLATFORM, "show ntp associations"))


def parse_show_configuration_display_set(text: str) -> Facts:
    """``show configuration | display set``: one ``set`` statement per line."""
    command = "show configuration | display set"
    lines = clean_lines(text, command)
    statements = sum(1 for line in lines if line.startswith(("set ", "deactivate ", "delete ", "activate ")))
    if statements == 0:
        raise DeviceParseError(PLATFORM, command, "'set ...' statements; found none (is it the curly-brace form? "
                               "capture it with '| display set')")
    return Facts(platform=PLATFORM, command=command, config=normalise("\n".join(lines)))


COMMANDS: dict[str, Callable[[str], Facts]] = {
    "show version": parse_show_version,
    "show chassis hardware": parse_show_chassis_hardware,
    "show ntp status": parse_show_ntp_status,
    "show ntp associations": parse_show_ntp_associations,
    "show configuration | display set": parse_show_configuration_display_set,
}
