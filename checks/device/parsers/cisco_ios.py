"""Cisco IOS and IOS-XE (``cisco_ios``; ``cisco_xe`` uses the same table): ``show version`` and friends.

``version`` is the release as the IOS line prints it: ``15.2(4)E10`` on IOS, ``17.9.4a`` on IOS-XE 16
and later (whose "Cisco IOS XE Software, Version 17.09.04a" line pads the same release). On IOS-XE 3.x
the IOS line carries the IOSd release (``15.5(3)S5``) and the XE release (``03.16.05.S``) is the one
the lifecycle follows, so that one is reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from checks.device._text import first, none_if_blank, uptime_seconds
from checks.device.clean import clean_lines
from checks.device.errors import DeviceParseError
from checks.device.model import Facts, InventoryItem
from checks.device.parsers import _cisco

PLATFORM = "cisco_ios"

_XE_LINE = re.compile(r"^\s*Cisco IOS[ -]XE Software,?\s+Version\s+(?P<v>[^\s,]+)", re.IGNORECASE)
_IOS_LINE = re.compile(r"^\s*(?:Cisco\s+)?IOS(?:\s*\(tm\))?\b.*?Software\b.*?,?\s*Version\s+(?P<v>[^\s,]+)",
                       re.IGNORECASE)
_XE_HINT = re.compile(r"IOS[ -]?XE|X86_64_LINUX_IOSD|_IOSXE|IOSXE", re.IGNORECASE)
_UPTIME = re.compile(r"^(?P<host>\S+)\s+uptime is\s+(?P<up>.+?)\s*$")
_IMAGE = re.compile(r'^System image file is\s+"(?P<image>[^"]+)"', re.IGNORECASE)
_MODEL_NUMBER = re.compile(r"^\s*Model\s+number\s*:\s*(?P<model>\S+)", re.IGNORECASE)
_PROCESSOR = re.compile(r"^\s*cisco\s+(?P<model>\S+)\s+\(.*?\)\s+(?:processor|with)\b", re.IGNORECASE)
_SYSTEM_SERIAL = re.compile(r"^\s*System\s+serial\s+number\s*:\s*(?P<sn>\S+)", re.IGNORECASE)
_BOARD_ID = re.compile(r"^\s*Processor board ID\s+(?P<sn>\S+)", re.IGNORECASE)
_STACK_ROW = re.compile(r"^\s*(?P<star>\*)?\s*(?P<num>\d+)\s+(?P<ports>\d+)\s+(?P<model>\S+)\s+(?P<ver>\S+)\s+"
                        r"(?P<image>\S+)(?:\s+(?P<mode>\S+))?\s*$")
_SWITCH_SECTION = re.compile(r"^\s*Switch\s+0*(?P<num>\d+)\s*$", re.IGNORECASE)


def _stack(lines: list[str]) -> tuple[InventoryItem, ...]:
    """Stack members from the "Switch Ports Model SW Version SW Image" table and their "Switch 0N" sections."""
    header = next((i for i, line in enumerate(lines) if re.match(r"^\s*Switch\s+Ports\s+Model\s+SW Version", line)),
                  None)
    if header is None:
        return ()
    members: list[tuple[int, str]] = []
    current: int | None = None
    for line in lines[header + 1:]:
        if set(line.strip()) <= {"-", " "}:
            continue
        m = _STACK_ROW.match(line)
        if m is None:
            break
        members.append((int(m["num"]), m["model"]))
        if m["star"]:
            current = int(m["num"])
    serials: dict[int, str] = {}
    section = current if current is not None else (members[0][0] if members else 1)
    for line in lines:
        if m := _SWITCH_SECTION.match(line):
            section = int(m["num"])
        elif (m := _SYSTEM_SERIAL.match(line)) and section not in serials:
            serials[section] = m["sn"]
    return tuple(InventoryItem(name=f"Switch {num}", pid=model, serial=serials.get(num)) for num, model in members)


def parse_show_version(text: str) -> Facts:
    """``show version`` of IOS 12.x-15.x and IOS-XE 3.x-17.x (routers, switches, stacks, CSR1000v/C8000v)."""
    lines = clean_lines(text, "show version")
    xe = first(_XE_LINE, lines)
    ios = next((m for line in lines if not re.match(r"^\s*(?:ROM|BOOTLDR)\s*:", line)
                and (m := _IOS_LINE.match(line)) and not _XE_LINE.match(line)), None)
    if ios is None and xe is None:
        raise DeviceParseError(PLATFORM, "show version", "a line 'Cisco IOS Software, ..., Version X' or "
                               "'Cisco IOS XE Software, Version X'; found none")
    if xe is not None and (ios is None or "(" in ios["v"]):
        version = xe["v"]
    else:
        assert ios is not None
        version = ios["v"]
    head = " ".join(lines[:12])
    up = first(_UPTIME, lines)
    image = first(_IMAGE, lines)
    model = first(_MODEL_NUMBER, lines) or first(_PROCESSOR, lines)
    serial = first(_SYSTEM_SERIAL, lines) or first(_BOARD_ID, lines)
    return Facts(
        platform=PLATFORM,
        command="show version",
        vendor="Cisco",
        os_name="IOS-XE" if xe is not None or _XE_HINT.search(head) else "IOS",
        version=version.rstrip(","),
        hostname=up["host"] if up else None,
        model=model["model"] if model else None,
        serial=none_if_blank(serial["sn"]) if serial else None,
        uptime=up["up"] if up else None,
        uptime_seconds=uptime_seconds(up["up"]) if up else None,
        image=image["image"] if image else None,
        inventory=_stack(lines),
    )


COMMANDS: dict[str, Callable[[str], Facts]] = _cisco.ios_style_commands(PLATFORM, parse_show_version)
