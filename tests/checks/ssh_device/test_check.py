"""The ``ssh_device`` check end to end on the agent's side: real sshd devices, one result per device,
a configuration change told once and only after its result was queued, unreachable devices said so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.sensor.hostkeys import HostKeyStore, presented_key
from checks.base import Context, Undelivered
from checks.ssh_device import SshDevice, SshDeviceArgs, SshDeviceResult
from tests.sensor.sshd import Sshd, free_port, keygen

FIX = Path(__file__).parents[1] / "device" / "fixtures" / "fortinet"
STATUS = FIX / "get_system_status" / "fgt100d_5.6.3.txt"
NTP = FIX / "diagnose_sys_ntp_status" / "unsynced_unreachable.txt"
BASE = FIX / "show_full-configuration" / "fgt_hq_base.txt"
CHANGED = FIX / "show_full-configuration" / "fgt_hq_policy_changed.txt"


def _device(tmp: Path, key: Path, config: Path, name: str = "fgt") -> Sshd:
    return Sshd(tmp / name, Path(f"{key}.pub"), {
        "prompt": "FGT100D", "suffix": [" # ", " # "], "start_enabled": True, "page_lines": 20,
        "outputs": {"get system status": str(STATUS), "diagnose sys ntp status": str(NTP),
                    "show full-configuration": str(config)}})


@pytest.fixture
def sensor(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "agent"
    data.mkdir(mode=0o700)
    key = keygen(tmp_path / "fw_ed25519")
    creds = data / "credentials.yaml"
    creds.write_text(f"fw:\n  username: root\n  key_file: {key}\n")
    creds.chmod(0o600)
    return data, key


def _args(*devices: dict[str, object]) -> SshDeviceArgs:
    return SshDeviceArgs.from_params({"ranges": ["127.0.0.0/8"], "devices": list(devices)})


def test_one_result_per_device_and_a_config_change_told_once(sensor: tuple[Path, Path], tmp_path: Path) -> None:
    data, key = sensor
    fgt = _device(tmp_path, key, BASE)
    try:
        HostKeyStore(data).pin(fgt.host, fgt.port, presented_key(fgt.host, fgt.port))
        closed = free_port()
        args = _args({"name": "fw-hq", "address": fgt.host, "port": fgt.port, "platform": "fortinet",
                      "credential": "fw", "purpose": "HQ firewall"},
                     {"name": "fw-gone", "address": "127.0.0.1", "port": closed, "platform": "fortinet",
                      "credential": "fw"},
                     {"name": "fw-nocred", "address": fgt.host, "port": fgt.port, "platform": "fortinet",
                      "credential": "nope"})
        ctx = Context(data_dir=data, state_dir=tmp_path / "state")
        first = list(SshDevice().collect(args, ctx))
        assert [r.device for r in first] == ["fw-hq", "fw-gone", "fw-nocred", ""]  # the last: the run itself
        hq, gone, nocred, run = first
        expected = json.loads(STATUS.with_suffix(".json").read_text())
        assert hq.reached and hq.version == expected["version"] and hq.purpose == "HQ firewall"
        assert hq.ntp is not None and hq.ntp.synchronized is False
        assert hq.config is not None and hq.config.first and not hq.config.changed
        assert {s.name for s in hq.signatures} >= {"Virus-DB", "IPS-DB"}
        # Their age is measured at collection, as a host's av age is (FortiOS 5.6 databases: years).
        assert all(s.age_hours > 10_000 for s in hq.signatures if s.released_at is not None)
        assert (gone.reached, gone.error_kind) == (False, "connect_failed") and "fw-gone" in gone.error
        assert (nocred.reached, nocred.error_kind) == (False, "credential") and "'nope' is not in" in nocred.error
        assert run == SshDeviceResult(device="", address="", port=0, platform="", reached=True)

        # Nothing changed: no change reported.
        again, *_others = list(SshDevice().collect(args, ctx))
        assert again.config is not None and not again.config.first and not again.config.changed
    finally:
        fgt.stop()
    changed = _device(tmp_path, key, CHANGED, name="fgt2")
    try:
        HostKeyStore(data).pin(changed.host, changed.port, presented_key(changed.host, changed.port))
        args2 = _args({"name": "fw-hq", "address": changed.host, "port": changed.port, "platform": "fortinet",
                       "credential": "fw"})
        # The change's result cannot be queued (the spool is full): it is not remembered, so it is told again.
        refused: list[SshDeviceResult] = []

        def full(result: object) -> None:
            refused.append(result)  # type: ignore[arg-type]
            raise Undelivered("spool full")

        list(SshDevice().collect(args2, Context(data_dir=data, state_dir=tmp_path / "state", emit=full)))
        assert refused[0].config is not None and refused[0].config.changed
        queued: list[SshDeviceResult] = []
        list(SshDevice().collect(args2, Context(data_dir=data, state_dir=tmp_path / "state", emit=queued.append)))
        c = queued[0].config
        assert c is not None and c.changed and c.previous_digest and c.previous_digest != c.digest
        assert c.diff.startswith("--- previous") and "\n-" in c.diff and "\n+" in c.diff
        assert "ENC" not in c.diff  # FortiOS's encrypted secrets are redacted before anything leaves
        # Once queued it is known: the next run tells nothing more.
        later: list[SshDeviceResult] = []
        list(SshDevice().collect(args2, Context(data_dir=data, state_dir=tmp_path / "state", emit=later.append)))
        assert later[0].config is not None and not later[0].config.changed
    finally:
        changed.stop()


def test_a_device_with_an_unpinned_key_is_reported_unreached_with_its_fingerprint(
        sensor: tuple[Path, Path], tmp_path: Path) -> None:
    data, key = sensor
    fgt = _device(tmp_path, key, BASE)
    try:
        (r, _run) = SshDevice().collect(_args({"name": "fw-new", "address": fgt.host, "port": fgt.port,
                                                "platform": "fortinet", "credential": "fw"}),
                                         Context(data_dir=data, state_dir=tmp_path / "state"))
        assert (r.reached, r.error_kind) == (False, "unknown_host_key") and fgt.fingerprint() in r.error
    finally:
        fgt.stop()


def test_params_are_checked_before_anything_is_sent() -> None:
    from checks.ssh_device.args import SshDeviceArgsError

    with pytest.raises(SshDeviceArgsError, match=r"fw \(10.9.0.1\) is outside the ranges"):
        SshDeviceArgs.from_params({"ranges": ["10.20.0.0/24"], "devices": [
            {"name": "fw", "address": "10.9.0.1", "platform": "fortinet", "credential": "c"}]})


def test_a_linux_target_reports_its_os_as_an_agents_host_would(sensor: tuple[Path, Path], tmp_path: Path) -> None:
    from checks.eol.osrelease import os_item, parse_os_release

    data, key = sensor
    host = Sshd(tmp_path / "linux", Path(f"{key}.pub"))  # real commands: this machine's own os-release
    try:
        HostKeyStore(data).pin(host.host, host.port, presented_key(host.host, host.port))
        (r, _run) = SshDevice().collect(_args({"name": "db-legacy", "address": host.host, "port": host.port,
                                                "platform": "linux", "credential": "fw"}),
                                         Context(data_dir=data, state_dir=tmp_path / "state"))
        assert r.reached, r.error
        assert r.os == os_item(parse_os_release(Path("/etc/os-release").read_text()), source="ssh:/etc/os-release")
    finally:
        host.stop()
