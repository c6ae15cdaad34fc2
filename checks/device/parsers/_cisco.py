"""What Cisco IOS, IOS-XE, NX-OS and ASA print alike: inventory, IOS-style NTP status and associations."""

from __future__ import annotations

import re
from collections.abc import Callable

from checks.device._text import first, none_if_blank, number
from checks.device.clean import clean_lines
from checks.device.config import normalise
from checks.device.errors import DeviceParseError
from checks.device.model import Facts, InventoryItem, NtpPeer, NtpState

_INV_NAME = re.compile(r'^\s*NAME:\s*"(?P<name>[^"]*)"\s*,\s*DESCR:\s*"(?P<descr>[^"]*)"', re.IGNORECASE)
_INV_PID = re.compile(r"^\s*PID:\s*(?P<pid>[^,]*?)\s*,\s*VID:\s*(?P<vid>[^,]*?)\s*,\s*SN:\s*(?P<sn>\S*)\s*$",
                      re.IGNORECASE)
_CHASSIS_NAMES = ("chassis", "1", "switch 1", "switch system", "rack 0")


def parse_show_inventory(text: str, platform: str) -> Facts:
    """``show inventory``: ``NAME: "..", DESCR: ".."`` then ``PID: .. , VID: .. , SN: ..`` per item."""
    lines = clean_lines(text, "show inventory")
    items: list[InventoryItem] = []
    pending: re.Match[str] | None = None
    for line in lines:
        if m := _INV_NAME.match(line):
            pending = m
        elif (m := _INV_PID.match(line)) and pending is not None:
            items.append(InventoryItem(name=pending["name"].strip(), description=pending["descr"].strip(),
                                       pid=none_if_blank(m["pid"]), serial=none_if_blank(m["sn"])))
            pending = None
    if not items:
        raise DeviceParseError(platform, "show inventory", 'NAME: "...", DESCR: "..." / PID: ..., VID: ..., SN: ... '
                               "item pairs; found none")
    chassis = next((i for i in items if i.name.lower() in _CHASSIS_NAMES), items[0])
    return Facts(platform=platform, command="show inventory", model=chassis.pid, serial=chassis.serial,
                 inventory=tuple(items))


_SYNC = re.compile(r"Clock is (?P<state>synchronized|unsynchronized)(?:, stratum (?P<stratum>\d+))?"
                   r"(?:, reference is (?P<ref>\S+))?", re.IGNORECASE)
_OFFSET = re.compile(r"clock offset is (?P<offset>[-+]?[\d.]+) msec", re.IGNORECASE)


def parse_show_ntp_status(text: str, platform: str) -> Facts:
    """IOS, IOS-XE and ASA ``show ntp status``: "Clock is synchronized, stratum 3, reference is 192.0.2.1"."""
    lines = clean_lines(text, "show ntp status")
    sync = first(_SYNC, lines)
    if sync is None:
        raise DeviceParseError(platform, "show ntp status", "a line 'Clock is synchronized|unsynchronized, stratum N'")
    synchronized = sync["state"].lower() == "synchronized"
    offset = first(_OFFSET, lines)
    stratum = int(sync["stratum"]) if sync["stratum"] else None
    return Facts(platform=platform, command="show ntp status", ntp=NtpState(
        synchronized=synchronized,
        offset_ms=number(offset["offset"], platform, "show ntp status", "clock offset") if offset and synchronized
        else None,
        stratum=stratum,
        reference=sync["ref"] if synchronized and sync["ref"] else None,
    ))


# IOS tally codes ("*" system peer, "#" selected, "+" candidate, "-" outlyer, "x" falseticker, "~" configured);
# older releases print "#" for "master (unsynced)", and it is read the same way: not the system peer.
_ASSOC_TALLY = {"*": "selected", "#": "backup", "+": "candidate", "-": "outlier", "x": "falseticker"}
_ASSOC_ROW = re.compile(
    r"^(?P<tally>[*#+\-x~ ]*)(?P<address>[0-9A-Fa-f.:]+|\S+?)\s+(?P<ref>\S+)\s+(?P<st>\d+)\s+(?P<when>\S+)\s+"
    r"(?P<poll>\d+)\s+(?P<reach>[0-7]+)\s+(?P<delay>[-\d.]+)\s+(?P<offset>[-\d.]+)\s+(?P<disp>[-\d.]+)\s*$"
)


def parse_show_ntp_associations(text: str, platform: str) -> Facts:
    """IOS-style ``show ntp associations``: one row per peer, its tally codes first, offsets in ms."""
    lines = clean_lines(text, "show ntp associations")
    header = next((i for i, line in enumerate(lines) if re.match(r"^\s*address\s+ref\s*clock\s+st", line, re.I)), None)
    if header is None:
        raise DeviceParseError(platform, "show ntp associations", "a header 'address ref clock st when poll reach ...'")
    peers: list[NtpPeer] = []
    for line in lines[header + 1:]:
        m = _ASSOC_ROW.match(line)
        if m is None:
            continue
        tally = m["tally"].replace("~", "").strip()
        state = _ASSOC_TALLY.get(tally[:1], "unreachable" if m["reach"] == "0" else "rejected")
        peers.append(NtpPeer(address=m["address"], stratum=int(m["st"]), offset_ms=float(m["offset"]),
                             delay_ms=float(m["delay"]), selected=state == "selected", state=state))
    selected = next((p for p in peers if p.selected), None)
    return Facts(platform=platform, command="show ntp associations", ntp=NtpState(
        synchronized=selected is not None,
        offset_ms=selected.offset_ms if selected else None,
        stratum=selected.stratum + 1 if selected and selected.stratum is not None else None,
        reference=selected.address if selected else None,
        sources=tuple(peers),
    ))


_CONFIG_MARKS = re.compile(r"^(?:hostname|interface|version|end|!|username|ip |ntp |logging |snmp-server|"
                           r"feature |ASA Version|: Saved|aaa |service |boot |line |router |vlan |spanning-tree |"
                           r"management |daemon |transceiver )")


def parse_running_config(text: str, platform: str, command: str = "show running-config",
                         min_marks: int = 2) -> Facts:
    """``show running-config`` (IOS, IOS-XE, NX-OS, ASA, EOS): redacted, normalised, digested."""
    lines = clean_lines(text, command)
    marks = sum(1 for line in lines if _CONFIG_MARKS.match(line.strip()))
    if marks < min_marks:
        raise DeviceParseError(platform, command, "a running configuration (lines such as 'hostname ...', "
                               f"'interface ...', '!'); found {marks} such lines in {len(lines)}")
    return Facts(platform=platform, command=command, config=normalise("\n".join(lines)))


def ios_style_commands(platform: str, show_version: Callable[[str], Facts]) -> dict[str, Callable[[str], Facts]]:
    """The commands IOS, IOS-XE and ASA share: their own ``show version``, and this module's parsers of
    inventory, NTP status and associations and the running configuration."""
    return {
        "show version": show_version,
        "show inventory": lambda text: parse_show_inventory(text, platform),
        "show ntp status": lambda text: parse_show_ntp_status(text, platform),
        "show ntp associations": lambda text: parse_show_ntp_associations(text, platform),
        "show running-config": lambda text: parse_running_config(text, platform),
    }
