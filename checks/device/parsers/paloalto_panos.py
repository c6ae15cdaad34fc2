"""Palo Alto Networks PAN-OS (``paloalto_panos``): PA hardware, VM-Series, Panorama's firewall view.

``show system info`` prints ``key: value`` lines: ``sw-version: 10.1.6-h6`` is the version; the
content packages are ``app-version``/``app-release-date``, ``av-version``/``av-release-date``,
``threat-version``/``threat-release-date``, ``wildfire-version``/``wildfire-release-date`` and
others of that pattern. Their dates carry a zone abbreviation ("2023/10/22 14:01:21 PDT") and are
converted to UTC when the abbreviation is unambiguous.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from checks.device._text import key_values, none_if_blank, stamp_utc, uptime_seconds
from checks.device.clean import clean_lines
from checks.device.config import normalise
from checks.device.errors import DeviceParseError
from checks.device.model import Facts, NtpPeer, NtpState, SignatureDb

PLATFORM = "paloalto_panos"

# The content packages in the order PAN-OS prints them; other "*-version" keys with a release date follow.
_PACKAGES = ("app", "av", "threat", "wildfire", "wf-private", "url-filtering", "device-dictionary",
             "global-protect-datafile", "global-protect-clientless-vpn")


_XML_FIELD = re.compile(r"<([a-z][\w-]*)>([^<>]*)</\1>")


def parse_show_system_info(text: str) -> Facts:
    """``show system info`` of PAN-OS 8.x-11.x."""
    lines = clean_lines(text, "show system info")
    values = key_values(lines)
    if "sw-version" not in values:
        # The same command through the XML API, or "set cli config-output-format xml": <sw-version>..</sw-version>.
        values = {k: v.strip() for k, v in _XML_FIELD.findall("\n".join(lines))} or values
    version = none_if_blank(values.get("sw-version"))
    if version is None:
        raise DeviceParseError(PLATFORM, "show system info", "a line 'sw-version: X'; found none")
    names = [p for p in _PACKAGES if f"{p}-version" in values]
    names += [k.removesuffix("-release-date") for k in values
              if k.endswith("-release-date") and k.removesuffix("-release-date") not in names]
    signatures = []
    for name in names:
        pkg_version = none_if_blank(values.get(f"{name}-version"))
        if pkg_version is None or pkg_version == "0":
            continue
        released = none_if_blank(values.get(f"{name}-release-date"))
        signatures.append(SignatureDb(name=name, version=pkg_version, released=released,
                                      released_at=stamp_utc(released) if released else None))
    uptime = none_if_blank(values.get("uptime"))
    return Facts(
        platform=PLATFORM,
        command="show system info",
        vendor="Palo Alto Networks",
        os_name="PAN-OS",
        version=version,
        hostname=none_if_blank(values.get("hostname")),
        model=none_if_blank(values.get("model")),
        serial=none_if_blank(values.get("serial")),
        uptime=uptime,
        uptime_seconds=uptime_seconds(uptime) if uptime else None,
        signatures=tuple(signatures),
    )


_SYNCHED_TO = re.compile(r"^\s*NTP synched to\s+(?P<ref>\S+)", re.IGNORECASE)
_NOT_SYNCHED = re.compile(r"^\s*NTP not synched", re.IGNORECASE)
_SERVER = re.compile(r"^\s*NTP server:\s*(?P<addr>\S+)", re.IGNORECASE)
_STATUS = re.compile(r"^\s*status:\s*(?P<status>.+?)\s*$", re.IGNORECASE)
_REACHABLE = re.compile(r"^\s*reachable:\s*(?P<yes>yes|no)", re.IGNORECASE)


def parse_show_ntp(text: str) -> Facts:
    """``show ntp``: "NTP synched to <server>" (or "NTP not synched, using local clock") and the servers.

    PAN-OS prints no offset or stratum: both stay None. Being synched to ``LOCAL`` is not synchronised.
    """
    lines = clean_lines(text, "show ntp")
    synched = next((m for line in lines if (m := _SYNCHED_TO.match(line))), None)
    if synched is None and not any(_NOT_SYNCHED.match(line) for line in lines):
        raise DeviceParseError(PLATFORM, "show ntp", "a line 'NTP synched to X' or 'NTP not synched'; found none")
    servers: list[dict[str, str]] = []
    for line in lines:
        if m := _SERVER.match(line):
            servers.append({"address": m["addr"]})
        elif servers and (m := _STATUS.match(line)):
            servers[-1]["status"] = m["status"].lower()
        elif servers and (m := _REACHABLE.match(line)):
            servers[-1]["reachable"] = m["yes"].lower()
    reference = synched["ref"] if synched else None
    synchronized = reference is not None and reference.upper() != "LOCAL"
    peers = tuple(NtpPeer(
        address=s["address"],
        selected=synchronized and (s["address"] == reference or s.get("status") == "synched"),
        state="selected" if synchronized and (s["address"] == reference or s.get("status") == "synched")
        else ("unreachable" if s.get("reachable") == "no" else "candidate"),
    ) for s in servers)
    return Facts(platform=PLATFORM, command="show ntp", ntp=NtpState(
        synchronized=synchronized, reference=reference if synchronized else None, sources=peers))


def parse_show_config_running(text: str) -> Facts:
    """``show config running``: the XML configuration (with or without the API's ``<response>`` wrapper)."""
    command = "show config running"
    lines = clean_lines(text, command)
    body = "\n".join(lines)
    if "<config" not in body and "<devices>" not in body:
        raise DeviceParseError(PLATFORM, command, "an XML configuration starting with '<config ...>'; found none")
    return Facts(platform=PLATFORM, command=command, config=normalise(body))


COMMANDS: dict[str, Callable[[str], Facts]] = {
    "show system info": parse_show_system_info,
    "show ntp": parse_show_ntp,
    "show config running": parse_show_config_running,
}
