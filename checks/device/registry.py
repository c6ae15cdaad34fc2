"""The one explicit table of platforms and their commands, and :func:`parse`, the way in for callers.

Platform names are Netmiko's and ntc-templates'. Each platform's parsers live in
``checks/device/parsers/<platform>.py`` and are listed in that module's ``COMMANDS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from checks.device.errors import DeviceParseError, UnknownDeviceCommand
from checks.device.model import Facts
from checks.device.parsers import (
    arista_eos,
    cisco_asa,
    cisco_ios,
    cisco_nxos,
    cisco_xe,
    fortinet,
    juniper_junos,
    linux,
    paloalto_panos,
)

Parser = Callable[[str], Facts]

PLATFORMS: Mapping[str, Mapping[str, Parser]] = {
    "arista_eos": arista_eos.COMMANDS,
    "cisco_asa": cisco_asa.COMMANDS,
    "cisco_ios": cisco_ios.COMMANDS,
    "cisco_nxos": cisco_nxos.COMMANDS,
    "cisco_xe": cisco_xe.COMMANDS,
    "fortinet": fortinet.COMMANDS,
    "juniper_junos": juniper_junos.COMMANDS,
    "linux": linux.COMMANDS,
    "paloalto_panos": paloalto_panos.COMMANDS,
}

# The command a platform names its running configuration with, for callers that want "the config".
CONFIG_COMMANDS: Mapping[str, str] = {
    "arista_eos": "show running-config",
    "cisco_asa": "show running-config",
    "cisco_ios": "show running-config",
    "cisco_nxos": "show running-config",
    "cisco_xe": "show running-config",
    "fortinet": "show full-configuration",
    "juniper_junos": "show configuration | display set",
    "paloalto_panos": "show config running",
}


def canonical_command(platform: str, command: str) -> str | None:
    """The platform's command that ``command`` names, abbreviated as the CLI allows ("sh ver"), else None.

    Repeated spaces do not count; an abbreviation must match exactly one command word for word.
    """
    commands = PLATFORMS.get(platform, {})
    wanted = " ".join(command.split())
    if wanted in commands:
        return wanted
    typed = wanted.lower().split()
    matches = [c for c in commands if len(c.split()) == len(typed)
               and all(w.startswith(t) for t, w in zip(typed, c.lower().split(), strict=True))]
    return matches[0] if len(matches) == 1 else None


def parser_for(platform: str, command: str) -> Parser:
    """The parser of ``command`` on ``platform``; :class:`UnknownDeviceCommand` lists the known ones."""
    commands = PLATFORMS.get(platform)
    if commands is None:
        raise UnknownDeviceCommand(f"unknown platform {platform!r}; known: {', '.join(sorted(PLATFORMS))}")
    wanted = canonical_command(platform, command)
    parser = commands.get(wanted) if wanted is not None else None
    if parser is None:
        known = "; ".join(f"'{c}'" for c in commands)
        raise UnknownDeviceCommand(f"no parser for {command!r} on {platform}; known commands: {known}")
    return parser


def parse(platform: str, command: str, text: str) -> Facts:
    """The facts ``command``'s captured output ``text`` gives about a ``platform`` device.

    Raises :class:`UnknownDeviceCommand` or :class:`DeviceParseError` (naming this platform, even when
    the parser is shared with another) and nothing else, whatever the text holds.
    """
    parser = parser_for(platform, command)
    wanted = canonical_command(platform, command) or command
    try:
        facts = parser(text)
    except DeviceParseError as exc:
        raise DeviceParseError(platform, wanted, exc.expected) from None
    except (ValueError, IndexError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        # A parser bug must still not reach the operator as a traceback.
        raise DeviceParseError(platform, wanted, f"output this parser can read (it stopped at: {exc})") from None
    return dataclasses.replace(facts, platform=platform, command=wanted)
