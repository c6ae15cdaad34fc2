"""Configuration normalisation on the fixture configs: secrets never come out, volatile lines never count.

Each configuration fixture's JSON may say ``_secrets`` (strings of the capture that must not survive),
``_same_digest_as`` (a capture of the same configuration whose volatile lines or secrets' values
differ) or ``_differs_from`` with ``_diff_has`` (a real change and the diff lines that show it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from checks.device import CONFIG_COMMANDS, config_diff, normalise, parse
from checks.device.config import MARKER, redact_text
from tests.checks.device._fixtures import cases, command_of, read, slug

CONFIGS = [p for p in cases() if p.parent.name == slug(CONFIG_COMMANDS.get(p.parts[-3], "-"))
           and "error" not in json.loads(p.with_suffix(".json").read_text())]


def _meta(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.with_suffix(".json").read_text())
    return doc


def _facts(path: Path) -> Any:
    platform = path.parts[-3]
    return parse(platform, command_of(platform, path.parent.name), read(path))


def test_every_platform_with_a_configuration_has_config_fixtures() -> None:
    assert {p.parts[-3] for p in CONFIGS} == set(CONFIG_COMMANDS) - {"cisco_xe"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parts[-3]}/{p.stem}")
def test_no_secret_of_the_capture_survives(path: Path) -> None:
    secrets = _meta(path).get("_secrets", [])
    raw = read(path)
    facts = _facts(path)
    assert facts.config is not None
    shown = facts.config.text + json.dumps(facts.to_dict())
    for secret in secrets:
        assert secret in raw, f"{secret!r} is not in the capture: the fixture's list is wrong"
        assert secret not in shown, secret
    assert facts.config.redacted >= len({s for s in secrets if s in raw}) or not secrets
    assert (MARKER in facts.config.text) == bool(secrets)


@pytest.mark.parametrize("path", [p for p in CONFIGS if "_same_digest_as" in _meta(p)], ids=lambda p: p.stem)
def test_volatile_lines_and_secret_values_do_not_change_the_digest(path: Path) -> None:
    other = path.with_name(_meta(path)["_same_digest_as"] + ".txt")
    mine, theirs = _facts(path).config, _facts(other).config
    assert read(path) != read(other)
    assert mine.digest == theirs.digest
    assert config_diff(theirs, mine) == ""


@pytest.mark.parametrize("path", [p for p in CONFIGS if "_differs_from" in _meta(p)], ids=lambda p: p.stem)
def test_a_real_change_changes_the_digest_and_the_diff_shows_it_without_secrets(path: Path) -> None:
    meta = _meta(path)
    other = path.with_name(meta["_differs_from"] + ".txt")
    mine, theirs = _facts(path).config, _facts(other).config
    assert mine.digest != theirs.digest
    diff = config_diff(theirs, mine, "before", "after")
    assert diff.startswith("--- before\n+++ after\n")
    changed = [line.rstrip("\n") for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("---", "+++")]
    assert sorted(changed) == sorted(meta["_diff_has"])
    for secret in meta.get("_secrets", []):
        assert secret not in diff


def test_a_diff_of_raw_text_is_made_of_redacted_text() -> None:
    before = "hostname R1\nsnmp-server community OldC0mm RO\n"
    after = "hostname R1\nsnmp-server community NewC0mm RO\nsnmp-server location lab\n"
    diff = config_diff(before, after)
    assert "OldC0mm" not in diff and "NewC0mm" not in diff
    assert "+snmp-server location lab" in diff


@pytest.mark.parametrize(("line", "kept"), [
    ("enable secret 5 $1$abcd$efgh", "enable secret 5 <redacted>"),
    ("username a privilege 15 password 0 Plain", "username a privilege 15 password 0 <redacted>"),
    ("key chain KC1", "key chain KC1"),
    (" key 1", " key 1"),
    ("crypto key generate rsa modulus 2048", "crypto key generate rsa modulus 2048"),
    ("service password-encryption", "service password-encryption"),
    ("security passwords min-length 10", "security passwords min-length 10"),
    ("    set keylife 28800", "    set keylife 28800"),
    ('set protocols bgp group ext authentication-key "$9$abc"',
     'set protocols bgp group ext authentication-key "<redacted>"'),
    ("route-map OUT permit 10\n set community 65000:100", "route-map OUT permit 10\n set community 65000:100"),
    ("wpa-psk ascii 0 WiFiPass", "wpa-psk ascii 0 <redacted>"),
])
def test_redaction_keeps_the_shape_and_what_is_not_secret(line: str, kept: str) -> None:
    assert redact_text(line) == kept


def test_normalise_of_nothing_is_an_empty_config_with_a_stable_digest() -> None:
    assert normalise("").digest == normalise("\n\n").digest
    assert normalise("").lines == 0
