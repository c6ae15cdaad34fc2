"""Cisco NX-OS (``cisco_nxos``): Nexus 3000/5000/7000/9000 and the Nexus 9000v virtual switch.

``version`` is the ``NXOS: version`` (7.x and later) or ``system: version`` (6.x and before) value
without its bracketed note: ``7.0(3)I4(3)``, ``9.3(10)``, ``10.3(3)``, ``6.0(2)N2(7)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from checks.device._text import first, uptime_seconds
from checks.device.clean import clean_lines
from checks.device.errors import DeviceParseError
from checks.device.model import Facts, NtpPeer, NtpState
from checks.device.parsers import _cisco

PLATFORM = "cisco_nxos"

_VERSION = re.compile(r"^\s*(?:NXOS|NX-OS|system)\s*:\s*version\s+(?P<v>[^\s\[]+)", re.IGNORECASE)
_IMAGE = re.compile(r"^\s*(?:NXOS|system)\s+image file is\s*:\s*(?P<image>\S+)", re.IGNORECASE)
_CHASSIS = re.compile(r"^\s*cisco\s+(?P<model>.+?)\s*(?:\([^)]*\)\s*)?\s+chassis\b", re.IGNORECASE)
_BOARD_ID = re.compile(r"^\s*Processor board ID\s+(?P<sn>\S+)", re.IGNORECASE)
_DEVICE_NAME = re.compile(r"^\s*Device name\s*:\s*(?P<host>\S+)", re.IGNORECASE)
_UPTIME = re.compile(r"^\s*Kernel uptime is\s+(?P<up>.+?)\s*$", re.IGNORECASE)


def _json_version(body: str) -> Facts:
    """``show version | json``: nxos_ver_str (sys_ver_str before 7.x), chassis_id, proc_board_id, host_name."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise DeviceParseError(PLATFORM, "show version", "'show version' text or valid '| json' output") from None
    version = doc.get("nxos_ver_str") or doc.get("sys_ver_str") or doc.get("kickstart_ver_str") \
        if isinstance(doc, dict) else None
    if not isinstance(version, str) or not version:
        raise DeviceParseError(PLATFORM, "show version", "a JSON object with \"nxos_ver_str\" or \"sys_ver_str\"")
    chassis = doc.get("chassis_id")
    model = _CHASSIS.match(f"cisco {chassis}") if isinstance(chassis, str) else None
    parts = [doc.get(f"kern_uptm_{unit}") for unit in ("days", "hrs", "mins", "secs")]
    uptime = None
    if all(isinstance(p, int | str) and str(p).isdigit() for p in parts):
        days, hours, minutes, seconds = (int(str(p)) for p in parts)
        uptime = ((days * 24 + hours) * 60 + minutes) * 60 + seconds

    def text(key: str) -> str | None:
        value = doc.get(key)
        return value.strip() or None if isinstance(value, str) else None

    return Facts(platform=PLATFORM, command="show version", vendor="Cisco", os_name="NX-OS",
                 version=version.split()[0], hostname=text("host_name"),
                 model=model["model"] if model else text("chassis_id"), serial=text("proc_board_id"),
                 uptime_seconds=uptime, image=text("nxos_file_name") or text("isan_file_name"))


def parse_show_version(text: str) -> Facts:
    """``show version``: the Software and Hardware blocks, device name and kernel uptime (or its ``| json``)."""
    lines = clean_lines(text, "show version")
    if "\n".join(lines).lstrip().startswith("{"):
        return _json_version("\n".join(lines))
    version = first(_VERSION, lines)
    if version is None:
        raise DeviceParseError(PLATFORM, "show version", "a line 'NXOS: version X' or 'system: version X'; found none")
    chassis = first(_CHASSIS, lines)
    serial = first(_BOARD_ID, lines)
    host = first(_DEVICE_NAME, lines)
    up = first(_UPTIME, lines)
    image = first(_IMAGE, lines)
    return Facts(
        platform=PLATFORM,
        command="show version",
        vendor="Cisco",
        os_name="NX-OS",
        version=version["v"],
        hostname=host["host"] if host else None,
        model=chassis["model"] if chassis else None,
        serial=serial["sn"] if serial else None,
        uptime=up["up"] if up else None,
        uptime_seconds=uptime_seconds(up["up"]) if up else None,
        image=image["image"] if image else None,
    )


_PEER_ROW = re.compile(r"^(?P<mark>[*+\-=])?\s*(?P<remote>[0-9A-Fa-f.:]{3,}|[A-Za-z][\w.\-]*)\s+(?P<local>\S+)\s+"
                       r"(?P<st>\d+)\s+(?P<poll>\d+)\s+(?P<reach>[0-7]+)\s+(?P<delay>[-\d.]+)(?:\s+(?P<vrf>\S+))?\s*$")


def parse_show_ntp_peer_status(text: str) -> Facts:
    """``show ntp peer-status``: ``*`` marks the peer the clock is synchronised to; no offset is printed."""
    lines = clean_lines(text, "show ntp peer-status")
    heading = re.compile(r"^\s*remote\s+local\s+st\s+poll\s+reach", re.IGNORECASE)
    header = next((i for i, line in enumerate(lines) if heading.match(line)), None)
    if header is None:
        raise DeviceParseError(PLATFORM, "show ntp peer-status", "a header 'remote local st poll reach delay'")
    peers: list[NtpPeer] = []
    for line in lines[header + 1:]:
        m = _PEER_ROW.match(line)
        if m is None:
            continue
        selected = m["mark"] == "*"
        # NX-OS prints the delay in seconds.
        peers.append(NtpPeer(address=m["remote"], stratum=int(m["st"]), delay_ms=float(m["delay"]) * 1000,
                             selected=selected,
                             state="selected" if selected else ("unreachable" if m["reach"] == "0" else "candidate")))
    chosen = next((p for p in peers if p.selected), None)
    return Facts(platform=PLATFORM, command="show ntp peer-status", ntp=NtpState(
        synchronized=chosen is not None,
        stratum=chosen.stratum + 1 if chosen and chosen.stratum is not None and chosen.stratum < 16 else None,
        reference=chosen.address if chosen else None,
        sources=tuple(peers),
    ))


def parse_show_inventory(text: str) -> Facts:
    return _cisco.parse_show_inventory(text, PLATFORM)


def parse_show_running_config(text: str) -> Facts:
    return _cisco.parse_running_config(text, PLATFORM)


COMMANDS: dict[str, Callable[[str], Facts]] = {
    "show version": parse_show_version,
    "show inventory": parse_show_inventory,
    "show ntp peer-status": parse_show_ntp_peer_status,
    "show running-config": parse_show_running_config,
}
