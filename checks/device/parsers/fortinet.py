"""Fortinet FortiGate running FortiOS (``fortinet``): ``get system status`` and NTP, full configuration.

``version`` is the release after the ``v`` of the ``Version:`` line: "Version: FortiGate-60E
v7.0.13,build0566,231023 (GA.M)" gives ``7.0.13``, model ``FortiGate-60E`` and build ``0566``.
Signature databases are every ``Name: version(YYYY-MM-DD HH:MM)`` line (Virus-DB, Extended DB, IPS-DB,
APP-DB, ...). FortiOS prints those dates without a zone; they are read as UTC and marked
``zone_assumed``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from checks.device._text import key_values, none_if_blank, stamp_utc
from checks.device.clean import clean_lines
from checks.device.config import normalise
from checks.device.errors import DeviceParseError
from checks.device.model import Facts, NtpPeer, NtpState, SignatureDb

PLATFORM = "fortinet"

_VERSION = re.compile(r"^(?P<model>\S+)\s+v(?P<v>\d+\.\d+(?:\.\d+)?)\s*,\s*build\s*(?P<build>\d+)", re.IGNORECASE)
_DB = re.compile(r"^(?P<version>\d+\.\d+)\s*\((?P<date>\d{4}-\d{2}-\d{2}(?: \d{2}:\d{2}(?::\d{2})?)?)\)")


def parse_get_system_status(text: str) -> Facts:
    """``get system status`` of FortiOS 5.x-7.x, hardware and VM."""
    lines = clean_lines(text, "get system status")
    values = key_values(lines)
    version = _VERSION.match(values.get("Version", ""))
    if version is None:
        raise DeviceParseError(PLATFORM, "get system status", "a line 'Version: <model> vX.Y.Z,buildNNNN,...'; found "
                               + (repr(values["Version"]) if "Version" in values else "none"))
    signatures = []
    for key, value in values.items():
        if (db := _DB.match(value)) is None:
            continue
        signatures.append(SignatureDb(name=key, version=db["version"], released=db["date"],
                                      released_at=stamp_utc(db["date"], default_zone="UTC"), zone_assumed=True))
    return Facts(
        platform=PLATFORM,
        command="get system status",
        vendor="Fortinet",
        os_name="FortiOS",
        version=version["v"],
        build=version["build"],
        hostname=none_if_blank(values.get("Hostname")),
        model=version["model"],
        serial=none_if_blank(values.get("Serial-Number")),
        signatures=tuple(signatures),
    )


_SYNC = re.compile(r"^synchronized:\s*(?P<sync>yes|no)", re.IGNORECASE)
_SERVER = re.compile(r"^\s*(?:ipv[46]\s+)?server\((?P<name>[^)]*)\)\s+(?P<addr>\S+)\s+--\s+(?P<reach>\w+)"
                     r"(?:\((?P<mask>0x[0-9a-f]+)\))?(?P<rest>.*)$", re.IGNORECASE)
_STRATUM = re.compile(r"stratum=(?P<st>\d+)")
_OFFSET = re.compile(r"clock offset is\s+(?P<off>[-+]?[\d.]+)\s*sec", re.IGNORECASE)


def parse_diagnose_sys_ntp_status(text: str) -> Facts:
    """``diagnose sys ntp status``: "synchronized: yes", then one block per server ("... selected")."""
    lines = clean_lines(text, "diagnose sys ntp status")
    sync = next((m for line in lines if (m := _SYNC.match(line.strip()))), None)
    if sync is None:
        raise DeviceParseError(PLATFORM, "diagnose sys ntp status", "a line 'synchronized: yes|no, ntpsync: ...'")
    blocks: list[dict[str, object]] = []
    for line in lines:
        if m := _SERVER.match(line):
            blocks.append({"address": m["addr"], "reachable": m["reach"].lower() == "reachable",
                           "selected": "selected" in m["rest"].lower()})
        elif blocks:
            block = blocks[-1]
            if (st := _STRATUM.search(line)) and "stratum" not in block:
                block["stratum"] = int(st["st"])
            if off := _OFFSET.search(line):
                block["offset_ms"] = float(off["off"]) * 1000
    peers = []
    for b in blocks:
        selected = bool(b["selected"])
        stratum = b.get("stratum")
        offset = b.get("offset_ms")
        peers.append(NtpPeer(
            address=str(b["address"]),
            stratum=stratum if isinstance(stratum, int) else None,
            offset_ms=offset if isinstance(offset, float) else None,
            selected=selected,
            state="selected" if selected else ("candidate" if b["reachable"] else "unreachable"),
        ))
    synchronized = sync["sync"].lower() == "yes"
    chosen = next((p for p in peers if p.selected), None) if synchronized else None
    return Facts(platform=PLATFORM, command="diagnose sys ntp status", ntp=NtpState(
        synchronized=synchronized,
        offset_ms=chosen.offset_ms if chosen else None,
        stratum=chosen.stratum + 1 if chosen and chosen.stratum is not None else None,
        reference=chosen.address if chosen else None,
        sources=tuple(peers),
    ))


def parse_show_full_configuration(text: str) -> Facts:
    """``show full-configuration`` (or ``show``): ``config ...`` / ``edit`` / ``set`` / ``next`` / ``end``."""
    command = "show full-configuration"
    lines = clean_lines(text, command)
    blocks = sum(1 for line in lines if line.lstrip().startswith("config "))
    if blocks == 0 or not any(line.strip() == "end" for line in lines):
        raise DeviceParseError(PLATFORM, command, "'config ...' blocks closed by 'end'; found "
                               f"{blocks} 'config' lines in {len(lines)}")
    return Facts(platform=PLATFORM, command=command, config=normalise("\n".join(lines)))


COMMANDS: dict[str, Callable[[str], Facts]] = {
    "get system status": parse_get_system_status,
    "diagnose sys ntp status": parse_diagnose_sys_ntp_status,
    "show full-configuration": parse_show_full_configuration,
}
