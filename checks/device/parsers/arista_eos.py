"""Arista EOS (``arista_eos``): 7000-series switches, vEOS and cEOS.

``version`` is the first word of ``Software image version``: ``4.28.3M`` (cEOS appends
"-<build>" and notes such as "(engineering build)", which are left out).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from checks.device._text import first, key_values, none_if_blank, uptime_seconds
from checks.device.clean import clean_lines
from checks.device.errors import DeviceParseError
from checks.device.model import Facts, NtpState
from checks.device.parsers import _cisco
from checks.device.parsers.juniper_junos import ntpq_peers

PLATFORM = "arista_eos"

_MODEL = re.compile(r"^\s*Arista\s+(?P<model>\S+)")
_VERSION = re.compile(r"^(?P<v>\d+\.\d+[\w.]*?)(?:-\d+\.\w+)?(?:\s|$)")


def _json_version(lines: list[str]) -> Facts | None:
    """``show version | json``: modelName, version, serialNumber, uptime (seconds)."""
    body = "\n".join(lines).strip()
    if not body.startswith("{"):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        raise DeviceParseError(PLATFORM, "show version", "'show version' text or valid '| json' output") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("version"), str):
        raise DeviceParseError(PLATFORM, "show version", "a JSON object with a \"version\" string")
    version = _VERSION.match(doc["version"])
    uptime = doc.get("uptime")
    return Facts(
        platform=PLATFORM, command="show version", vendor="Arista", os_name="EOS",
        version=version["v"] if version else doc["version"],
        model=doc.get("modelName") or None if isinstance(doc.get("modelName"), str) else None,
        serial=doc.get("serialNumber") or None if isinstance(doc.get("serialNumber"), str) else None,
        uptime_seconds=int(uptime) if isinstance(uptime, int | float) else None,
    )


def parse_show_version(text: str) -> Facts:
    """``show version`` of EOS 4.x."""
    lines = clean_lines(text, "show version")
    as_json = _json_version(lines)
    if as_json is not None:
        return as_json
    values = key_values(lines)
    image = values.get("Software image version", "")
    version = _VERSION.match(image)
    if version is None:
        raise DeviceParseError(PLATFORM, "show version", "a line 'Software image version: 4.X.YZ'; found "
                               + (repr(image) if image else "none"))
    model = first(_MODEL, lines)
    uptime = none_if_blank(values.get("Uptime"))
    return Facts(
        platform=PLATFORM,
        command="show version",
        vendor="Arista",
        os_name="EOS",
        version=version["v"],
        model=model["model"] if model else None,
        serial=none_if_blank(values.get("Serial number")),
        uptime=uptime,
        uptime_seconds=uptime_seconds(uptime) if uptime else None,
    )


_SYNCHRONISED = re.compile(r"^\s*synchroni[sz]ed to (?:NTP server \((?P<ref>[^)]+)\)|(?P<local>local clock))"
                           r"(?: at stratum (?P<st>\d+))?", re.IGNORECASE)
_UNSYNCHRONISED = re.compile(r"^\s*unsynchroni[sz]ed", re.IGNORECASE)
_WITHIN = re.compile(r"time correct to within\s+(?P<ms>[\d.]+)\s*ms", re.IGNORECASE)


def parse_show_ntp_status(text: str) -> Facts:
    """``show ntp status``: "synchronised to NTP server (192.0.2.1) at stratum 3" or "unsynchronised".

    EOS prints an error bound ("time correct to within 45 ms"), not an offset, so ``offset_ms`` stays None.
    """
    lines = clean_lines(text, "show ntp status")
    sync = first(_SYNCHRONISED, lines)
    if sync is None:
        if any(_UNSYNCHRONISED.match(line) for line in lines):
            return Facts(platform=PLATFORM, command="show ntp status", ntp=NtpState(synchronized=False))
        raise DeviceParseError(PLATFORM, "show ntp status", "a line 'synchronised to NTP server (X) at stratum N' "
                               "or 'unsynchronised'")
    synchronized = sync["local"] is None
    stratum = int(sync["st"]) if sync["st"] else None
    return Facts(platform=PLATFORM, command="show ntp status", ntp=NtpState(
        synchronized=synchronized, stratum=stratum if synchronized else None,
        reference=sync["ref"] if synchronized else None))


def parse_show_ntp_associations(text: str) -> Facts:
    lines = clean_lines(text, "show ntp associations")
    return Facts(platform=PLATFORM, command="show ntp associations",
                 ntp=ntpq_peers("\n".join(lines), PLATFORM, "show ntp associations"))


def parse_show_running_config(text: str) -> Facts:
    return _cisco.parse_running_config(text, PLATFORM)


COMMANDS: dict[str, Callable[[str], Facts]] = {
    "show version": parse_show_version,
    "show ntp status": parse_show_ntp_status,
    "show ntp associations": parse_show_ntp_associations,
    "show running-config": parse_show_running_config,
}
