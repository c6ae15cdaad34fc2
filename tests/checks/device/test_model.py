"""The device facts' own behaviour: merging commands, JSON form, the ``ntp`` result's shape, odd input."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from checks.device import DeviceParseError, Facts, NtpPeer, NtpState, SignatureDb, parse
from tests.checks.device._fixtures import FIXTURES, cases, command_of, read


def test_merge_completes_and_never_overwrites() -> None:
    version = Facts(platform="juniper_junos", command="show version", version="19.4R3-S1.3", model="mx480")
    hardware = Facts(platform="juniper_junos", command="show chassis hardware", model="MX480", serial="JN11F1234AFA")
    merged = version.merge(hardware)
    assert (merged.version, merged.model, merged.serial, merged.command) == (
        "19.4R3-S1.3", "mx480", "JN11F1234AFA", "show version")


def test_json_form_has_utc_times_and_no_config_text() -> None:
    facts = Facts(platform="fortinet", command="get system status", signatures=(
        SignatureDb("Virus-DB", "91.07796", "2023-10-23 20:53", datetime(2023, 10, 23, 20, 53, tzinfo=UTC), True),))
    doc = facts.to_dict()
    assert doc["signatures"][0]["released_at"] == "2023-10-23T20:53:00Z"
    assert json.loads(json.dumps(doc)) == doc


def test_ntp_state_builds_the_ntp_checks_result() -> None:
    from checks.ntp.parse import NtpResult, NtpSource

    state = NtpState(synchronized=True, offset_ms=-0.5, stratum=3, reference="192.0.2.1",
                     sources=(NtpPeer("192.0.2.1", stratum=2, offset_ms=-0.5, selected=True, state="selected"),
                              NtpPeer("192.0.2.2")))
    fields = state.ntp_result_fields()
    result = NtpResult(**{**fields, "sources": [NtpSource(**s) for s in fields["sources"]]})
    msg = result.to_proto()
    assert (msg.synchronized, msg.offset_ms, msg.stratum, msg.reference, msg.offset_source) == (
        True, -0.5, 3, "192.0.2.1", "daemon")
    assert [s.address for s in msg.sources] == ["192.0.2.1", "192.0.2.2"]
    unsynced = NtpState(synchronized=False, offset_ms=12.0).ntp_result_fields()
    assert (unsynced["offset_ms"], unsynced["offset_source"]) == (0.0, "")


MUTABLE = [p for p in cases() if "error" not in json.loads(p.with_suffix(".json").read_text())]


@pytest.mark.parametrize("path", MUTABLE[::3], ids=lambda p: str(p.relative_to(FIXTURES).with_suffix("")))
def test_damaged_output_gives_facts_or_the_parse_error_never_another_exception(path: Path) -> None:
    platform = path.parts[-3]
    command = command_of(platform, path.parent.name)
    lines = read(path).splitlines()
    rng = random.Random(path.name)  # the same damage on every run
    for _ in range(20):
        damaged = list(lines)
        cut = rng.randrange(len(damaged) + 1)
        damaged = damaged[:cut] if rng.random() < 0.5 else damaged[cut:]
        if rng.random() < 0.3:
            rng.shuffle(damaged)
        if damaged and rng.random() < 0.5:
            i = rng.randrange(len(damaged))
            damaged[i] = damaged[i][: rng.randrange(len(damaged[i]) + 1)]
        try:
            parse(platform, command, "\n".join(damaged))
        except DeviceParseError as exc:
            assert str(exc).startswith(f"{platform} {command!r}: expected ")
