"""``vigil-agent device keyscan|trust|collect`` against real sshd: what an operator types before adding a device."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.cli import main
from tests.sensor.sshd import Sshd, keygen

FIXTURES = Path(__file__).parents[1] / "checks" / "device" / "fixtures"
IOS_VERSION = FIXTURES / "cisco_ios" / "show_version" / "isr2911_15.7-3-M5.txt"
NTP_STATUS = FIXTURES / "cisco_ios" / "show_ntp_status" / "synchronized_15x.txt"


@pytest.fixture
def device(tmp_path: Path) -> tuple[Sshd, Path]:
    key = keygen(tmp_path / "netops_ed25519")
    sshd = Sshd(tmp_path / "r1", Path(f"{key}.pub"), {
        "prompt": "R1", "start_enabled": True, "outputs": {"show version": str(IOS_VERSION),
                                                         "show ntp status": str(NTP_STATUS)}})
    yield sshd, key
    sshd.stop()


def test_keyscan_trust_then_collect(device: tuple[Sshd, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    sshd, key = device
    data = tmp_path / "sensor"
    data.mkdir(mode=0o700)
    creds = data / "credentials.yaml"
    creds.write_text(f"core:\n  username: root\n  key_file: {key}\n")
    creds.chmod(0o600)
    where = ["--host", sshd.host, "--port", str(sshd.port)]
    collect = ["device", "collect", "--data-dir", str(data), *where, "--platform", "cisco_ios", "--credential", "core",
               "--command", "show version", "--command", "show ntp status"]

    # Before trust: refused, with the fingerprint and the command to run.
    assert main(collect) == 1
    err = capsys.readouterr().err
    assert "host key not trusted" in err and sshd.fingerprint() in err and err.count("\n") == 1

    assert main(["device", "keyscan", *where]) == 0
    out = capsys.readouterr().out
    assert out.split() == [f"[{sshd.host}]:{sshd.port}", "ssh-ed25519", sshd.fingerprint()]

    # A fingerprint that is not the device's pins nothing.
    assert main(["device", "trust", "--data-dir", str(data), *where, "--fingerprint", "SHA256:AAAA"]) == 1
    assert "nothing was pinned" in capsys.readouterr().err and not (data / "known_hosts").exists()
    assert main(["device", "trust", "--data-dir", str(data), *where, "--fingerprint", sshd.fingerprint()]) == 0
    assert f"pinned [{sshd.host}]:{sshd.port} ssh-ed25519 {sshd.fingerprint()}" in capsys.readouterr().out

    assert main([*collect, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    expected = json.loads(IOS_VERSION.with_suffix(".json").read_text())
    assert (doc["version"], doc["platform"], doc["problems"]) == (expected["version"], "cisco_ios", {})
    assert doc["ntp"]["synchronized"] is True
    # Nothing of the credential is printed.
    assert str(key) not in json.dumps(doc)


def test_collect_names_an_unknown_credential_and_command(device: tuple[Sshd, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    sshd, _ = device
    data = tmp_path / "sensor"
    data.mkdir()
    base = ["device", "collect", "--data-dir", str(data), "--host", sshd.host, "--port", str(sshd.port),
            "--platform", "cisco_ios"]
    assert main([*base, "--credential", "core"]) == 1
    assert "credential 'core' is not in" in capsys.readouterr().err
    assert main([*base, "--credential", "core", "--command", "show bogus"]) == 2
    assert "show bogus" in capsys.readouterr().err
    assert main(["device", "keyscan", "--host", "127.0.0.1", "--port", "0"]) == 2
    assert "not a TCP port" in capsys.readouterr().err
    os.environ.pop("SSH_AUTH_SOCK", None)


def test_credential_set_list_delete_never_print_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import io

    monkeypatch.setenv("VIGIL_VAULT_PASSPHRASE", "a long vault passphrase")
    data = tmp_path / "sensor"
    monkeypatch.setattr("sys.stdin", io.StringIO("Fw-Pa55\nEn-4ble\n"))
    assert main(["device", "credential", "set", "fw", "--data-dir", str(data), "--username", "admin",
                 "--password-stdin", "--enable-secret-stdin"]) == 0
    assert "added credential 'fw'" in capsys.readouterr().out
    assert main(["device", "credential", "list", "--data-dir", str(data), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == [{"name": "fw", "username": "admin", "password": True, "enable_secret": True}]
    assert "Fw-Pa55" not in out and "En-4ble" not in out
    audit = (data / "sensor-audit.jsonl").read_text()
    assert "credential.set" in audit and "Fw-Pa55" not in audit and "En-4ble" not in audit

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["device", "credential", "set", "fw", "--data-dir", str(data), "--username", "admin",
                 "--password-stdin"]) == 2
    assert "expected 1 non-empty line(s) on standard input" in capsys.readouterr().err
    monkeypatch.setenv("VIGIL_VAULT_PASSPHRASE", "wrong")
    assert main(["device", "credential", "list", "--data-dir", str(data)]) == 1
    assert "cannot be opened: wrong passphrase" in capsys.readouterr().err
    monkeypatch.setenv("VIGIL_VAULT_PASSPHRASE", "a long vault passphrase")
    assert main(["device", "credential", "delete", "nope", "--data-dir", str(data)]) == 2
    assert "(known: fw)" in capsys.readouterr().err
    assert main(["device", "credential", "delete", "fw", "--data-dir", str(data)]) == 0
    assert main(["device", "credential", "list", "--data-dir", str(data)]) == 0
    assert capsys.readouterr().out.strip().endswith("(none)")
