"""Cisco ASA (``cisco_asa``): physical 5500-X, Firepower appliances running ASA, and ASAv.

``version`` is the "Cisco Adaptive Security Appliance Software Version" value: ``9.8(4)10``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from checks.device._text import first, uptime_seconds
from checks.device.clean import clean_lines
from checks.device.errors import DeviceParseError
from checks.device.model import Facts
from checks.device.parsers import _cisco

PLATFORM = "cisco_asa"

_VERSION = re.compile(r"Cisco Adaptive Security Appliance Software Version\s+(?P<v>[^\s<]+)", re.IGNORECASE)
_HARDWARE = re.compile(r"^\s*Hardware:\s+(?P<model>[^,]+?)\s*,")
_SERIAL = re.compile(r"^\s*Serial Number:\s*(?P<sn>\S+)", re.IGNORECASE)
_UP = re.compile(r"^(?!failover\b)(?P<host>\S+)\s+up\s+(?P<up>\d.*?)\s*$", re.IGNORECASE)
_IMAGE = re.compile(r'^System image file is\s+"(?P<image>[^"]+)"', re.IGNORECASE)


def parse_show_version(text: str) -> Facts:
    """``show version`` of ASA 8.x-9.x, single and multiple context."""
    lines = clean_lines(text, "show version")
    version = first(_VERSION, lines)
    if version is None:
        raise DeviceParseError(PLATFORM, "show version", "a line 'Cisco Adaptive Security Appliance Software "
                               "Version X'; found none")
    hardware = first(_HARDWARE, lines)
    serial = first(_SERIAL, lines)
    up = first(_UP, lines)
    image = first(_IMAGE, lines)
    return Facts(
        platform=PLATFORM,
        command="show version",
        vendor="Cisco",
        os_name="ASA",
        version=version["v"],
        hostname=up["host"] if up else None,
        model=hardware["model"] if hardware else None,
        serial=serial["sn"] if serial else None,
        uptime=up["up"] if up else None,
        uptime_seconds=uptime_seconds(up["up"]) if up else None,
        image=image["image"] if image else None,
    )


COMMANDS: dict[str, Callable[[str], Facts]] = _cisco.ios_style_commands(PLATFORM, parse_show_version)
