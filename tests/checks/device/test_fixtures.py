"""Every captured output under fixtures/ parsed by its platform's parser and compared with its expected facts.

``<name>.json`` holds the facts that must come out: a subset of :meth:`Facts.to_dict` (a key left out is
not checked; ``null`` is checked and means "the output does not say"), or ``{"error": "..."}`` for
output the parser must refuse with that text in its message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from checks.device import PLATFORMS, DeviceParseError, parse
from tests.checks.device._fixtures import FIXTURES, cases, command_of, read, slug

CASES = cases()


def _subset(expected: Any, got: Any, where: str) -> list[str]:
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return [f"{where}: expected an object, got {got!r}"]
        return [p for k, v in expected.items() for p in _subset(v, got.get(k, "<missing>"), f"{where}.{k}")]
    if isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            return [f"{where}: expected {len(expected)} items, got {got!r}"]
        return [p for i, (e, g) in enumerate(zip(expected, got, strict=True)) for p in _subset(e, g, f"{where}[{i}]")]
    if isinstance(expected, float) and isinstance(got, float):
        return [] if got == pytest.approx(expected) else [f"{where}: expected {expected}, got {got}"]
    return [] if expected == got else [f"{where}: expected {expected!r}, got {got!r}"]


def test_every_fixture_has_expected_facts_and_provenance() -> None:
    assert CASES
    for path in CASES:
        assert path.with_suffix(".json").is_file(), path
        assert (path.parent / "PROVENANCE.md").is_file(), path.parent
        assert path.stem in (path.parent / "PROVENANCE.md").read_text(), f"{path.stem} not in its PROVENANCE.md"


def test_every_fixture_folder_names_a_known_platform_and_command() -> None:
    for folder in sorted({p.parent for p in CASES}):
        platform = folder.parent.name
        assert platform in PLATFORMS, folder
        assert folder.name in {slug(c) for c in PLATFORMS[platform]}, folder


@pytest.mark.parametrize("path", CASES, ids=lambda p: str(p.relative_to(FIXTURES).with_suffix("")))
def test_fixture(path: Path) -> None:
    platform = path.parent.parent.name
    command = command_of(platform, path.parent.name)
    # Keys starting with "_" are the configuration tests' (test_config.py), not facts.
    expected = {k: v for k, v in json.loads(path.with_suffix(".json").read_text()).items() if not k.startswith("_")}
    text = read(path)
    if "error" in expected:
        with pytest.raises(DeviceParseError) as refused:
            parse(platform, command, text)
        assert expected["error"] in str(refused.value)
        assert str(refused.value).startswith(f"{platform} {command!r}: expected ")
        return
    facts = parse(platform, command, text)
    got = facts.to_dict()
    assert got["platform"] == platform and got["command"] == command
    assert _subset(expected, got, path.stem) == []
    # The round trip through JSON the CLI makes does not change a value.
    assert json.loads(json.dumps(got)) == got


@pytest.mark.parametrize("path", [p for p in CASES if p.parts[-3] == "cisco_xe"], ids=lambda p: p.stem)
def test_cisco_ios_reads_ios_xe_output_the_same(path: Path) -> None:
    # Netmiko drives IOS-XE as cisco_ios too; the same output must give the same facts either way.
    command = command_of("cisco_xe", path.parent.name)
    if "error" in json.loads(path.with_suffix(".json").read_text()):
        return
    xe = parse("cisco_xe", command, read(path)).to_dict()
    ios = parse("cisco_ios", command, read(path)).to_dict()
    assert {**xe, "platform": "cisco_ios"} == ios
