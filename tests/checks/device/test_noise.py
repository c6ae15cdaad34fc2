"""Every fixture again, buried in what terminal sessions add: the facts must not change.

Each noise is what a real session leaves (see checks/device/clean.py); they are applied alone and all
together, to every fixture of every platform, so a parser cannot pass on tidy output only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from checks.device import DeviceParseError, clean, parse
from tests.checks.device._fixtures import FIXTURES, cases, command_of, read

PROMPTS = {"cisco_ios": "SW1#", "cisco_xe": "c9k-1#", "cisco_nxos": "n9k-1# ", "cisco_asa": "fw/pri/act# ",
           "juniper_junos": "netops@mx1> ", "fortinet": "FGT-HQ # ", "paloalto_panos": "admin@PA-220(active)> ",
           "arista_eos": "leaf1#", "linux": "[ops@host ~]$ "}


def _crlf(text: str, platform: str, command: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def _session(text: str, platform: str, command: str) -> str:
    prompt = PROMPTS[platform]
    banner = "*****\n* Authorised access only *\n*****\n\nLast login: Mon Oct 23 09:12:44 2023 from 192.0.2.200\n"
    return f"{banner}{prompt}terminal length 0\n{prompt}{command}\n{text.rstrip()}\n\n{prompt}"


def _pager(text: str, platform: str, command: str) -> str:
    # A pager prompt every 7 lines, erased the way the platform erases it.
    erase = {"juniper_junos": "---(more 37%)---\r                \r", "cisco_asa": "<--- More --->\r              \r",
             "cisco_nxos": "\x1b[7m--More--\x1b[m\r        \r"}.get(platform, " --More-- " + "\b" * 10 + " " * 10
                                                                  + "\b" * 10)
    lines = text.split("\n")
    return "\n".join(erase + line if i and i % 7 == 0 else line for i, line in enumerate(lines))


def _colour(text: str, platform: str, command: str) -> str:
    prompt = f"\x1b[1;32m{PROMPTS[platform]}\x1b[0m"
    return f"\x1b]0;{platform} session\x07{prompt}{command}\n{text}\x1b[0m\n{prompt}"


NOISES: dict[str, Callable[[str, str, str], str]] = {"crlf": _crlf, "session": _session, "pager": _pager,
                                                      "colour": _colour}


def _all(text: str, platform: str, command: str) -> str:
    for noise in ("pager", "session", "colour", "crlf"):
        text = NOISES[noise](text, platform, command)
    return text


NOISES["all"] = _all
CASES = [p for p in cases() if "error" not in json.loads(p.with_suffix(".json").read_text())]


@pytest.mark.parametrize("noise", sorted(NOISES))
@pytest.mark.parametrize("path", CASES, ids=lambda p: str(p.relative_to(FIXTURES).with_suffix("")))
def test_noise_changes_no_fact(path: Path, noise: str) -> None:
    platform = path.parts[-3]
    command = command_of(platform, path.parent.name)
    text = read(path)
    assert parse(platform, command, NOISES[noise](text, platform, command)) == parse(platform, command, text)


@pytest.mark.parametrize("path", CASES[::5], ids=lambda p: p.stem)
def test_cleaning_twice_is_cleaning_once(path: Path) -> None:
    platform = path.parts[-3]
    command = command_of(platform, path.parent.name)
    once = clean(_all(read(path), platform, command), command)
    assert clean(once, command) == once


@pytest.mark.parametrize("text", ["", "\n\n", "\x00\x01\x02", "SW1#", "SW1#show version\nSW1#", "\x1b[2J\x1b[H",
                                  "--More--", "ÿþ\ufffd garbage \udcff".encode("utf-8", "surrogateescape")
                                  .decode("utf-8", "replace"), "a" * 100_000, "Version: " * 5000])
def test_odd_input_is_refused_with_the_parse_error_only(text: str) -> None:
    from checks.device import PLATFORMS

    for platform, commands in PLATFORMS.items():
        for command in commands:
            try:
                parse(platform, command, text)
            except DeviceParseError as exc:
                assert str(exc).startswith(f"{platform} {command!r}: expected ")
