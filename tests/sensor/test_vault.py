"""The sensor's encrypted credential store, and password logins with its secrets against a real SSH
server (paramiko's server side: sshd would need a password on a system account)."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from agent.sensor import AuthFailed, CredentialError
from agent.sensor.credentials import Credentials
from agent.sensor.hostkeys import HostKeyStore
from agent.sensor.ssh import Target, collect
from agent.sensor.vault import VAULT_FILE, Secret, Vault

PASSPHRASE = "correct horse battery staple"


def test_secrets_round_trip_and_stay_encrypted(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path, PASSPHRASE, create=True)
    vault.set("core", Secret("netops", password="Pa55-w0rd!", enable_secret="en4ble"))
    raw = (tmp_path / VAULT_FILE).read_bytes()
    assert b"Pa55-w0rd" not in raw and b"en4ble" not in raw and b"netops" not in raw
    assert oct((tmp_path / VAULT_FILE).stat().st_mode & 0o777) == "0o600"
    again = Vault.open(tmp_path, PASSPHRASE)
    assert again.names() == ["core"]
    assert again.get("core") == Secret("netops", password="Pa55-w0rd!", enable_secret="en4ble")
    assert again.delete("core") and not Vault.open(tmp_path, PASSPHRASE).names()


def test_a_wrong_passphrase_and_any_changed_byte_are_refused(tmp_path: Path) -> None:
    Vault.open(tmp_path, PASSPHRASE, create=True).set("core", Secret("netops", password="x"))
    path = tmp_path / VAULT_FILE
    with pytest.raises(CredentialError, match="cannot be opened: wrong passphrase"):
        Vault.open(tmp_path, "wrong")
    doc = json.loads(path.read_text())
    data = bytearray(base64.b64decode(doc["data"]))
    data[3] ^= 1
    path.write_text(json.dumps({**doc, "data": base64.b64encode(bytes(data)).decode()}))
    with pytest.raises(CredentialError, match="cannot be opened"):
        Vault.open(tmp_path, PASSPHRASE)
    path.write_text(json.dumps({**doc, "n": 2**16}))  # the header is authenticated too
    with pytest.raises(CredentialError, match="cannot be opened"):
        Vault.open(tmp_path, PASSPHRASE)
    path.write_text("{not json")
    with pytest.raises(CredentialError, match="cannot be opened"):
        Vault.open(tmp_path, PASSPHRASE)


def test_the_passphrase_comes_from_systemd_a_file_or_the_environment(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CREDENTIALS_DIRECTORY", "VIGIL_VAULT_PASSPHRASE_FILE", "VIGIL_VAULT_PASSPHRASE"):
        monkeypatch.delenv(var, raising=False)
    Vault.open(tmp_path, PASSPHRASE, create=True).set("core", Secret("netops", password="x"))
    with pytest.raises(CredentialError, match="no vault passphrase"):
        Vault.open(tmp_path)
    monkeypatch.setenv("VIGIL_VAULT_PASSPHRASE", PASSPHRASE)
    assert Vault.open(tmp_path).names() == ["core"]
    monkeypatch.setenv("VIGIL_VAULT_PASSPHRASE", "wrong")
    creds_dir = tmp_path / "creds"
    creds_dir.mkdir()
    (creds_dir / "vigil-vault").write_text(PASSPHRASE + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds_dir))  # systemd's LoadCredential= wins
    assert Vault.open(tmp_path).names() == ["core"]


def test_credentials_yaml_and_the_vault_combine_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_VAULT_PASSPHRASE", PASSPHRASE)
    vault = Vault.open(tmp_path, create=True)
    vault.set("fw", Secret("admin", password="fw-pass"))
    vault.set("core", Secret("ignored", enable_secret="en4ble"))
    path = tmp_path / "credentials.yaml"
    path.write_text("core:\n  username: netops\n  key_file: /k\n  vault: true\nlab:\n  username: x\n  vault: true\n")
    path.chmod(0o600)
    creds = Credentials.load(tmp_path)
    fw = creds.get("fw")  # only in the vault: a password credential
    assert (fw.username, fw.password, fw.private_keys()) == ("admin", "fw-pass", [])
    core = creds.get("core")
    assert (core.username, core.enable_secret(), core.password) == ("netops", "en4ble", None)
    assert "en4ble" not in repr(core) and "fw-pass" not in repr(fw)
    with pytest.raises(CredentialError, match="vault: true, but the vault has no secret 'lab'"):
        creds.get("lab")
    with pytest.raises(CredentialError, match=r"'nope' is not in .* or the vault \(known: core, fw, lab\)"):
        creds.get("nope")


class _PasswordServer(paramiko.ServerInterface):
    def __init__(self, methods: str) -> None:
        self.methods = methods
        self.commands: list[bytes] = []
        self.exec_requested = threading.Event()

    def get_allowed_auths(self, username: str) -> str:
        return self.methods

    def check_auth_password(self, username: str, password: str) -> int:
        ok = "password" in self.methods and (username, password) == ("admin", "fw-pass")
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_auth_interactive(self, username: str, submethods: str) -> paramiko.InteractiveQuery:
        return paramiko.InteractiveQuery("", "", ("Password: ", False))

    def check_auth_interactive_response(self, responses: list[str]) -> int:
        return paramiko.AUTH_SUCCESSFUL if list(responses) == ["fw-pass"] else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.commands.append(command)
        self.exec_requested.set()
        return True


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[tuple[int, paramiko.PKey]]:
    host_key = paramiko.Ed25519Key.from_private_key_file(str(_ed25519(request)))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    methods = getattr(request, "param", "password")

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            t = paramiko.Transport(conn)
            t.add_server_key(host_key)
            handler = _PasswordServer(methods)
            t.start_server(server=handler)
            chan = t.accept(10)  # None when the client gave up (a refused login)
            if chan is not None and handler.exec_requested.wait(10):
                chan.sendall(b"Linux fw 6.1.0 x86_64\n")
                chan.send_exit_status(0)
                chan.close()

    threading.Thread(target=serve, daemon=True).start()
    yield port, host_key
    listener.close()


def _ed25519(request: pytest.FixtureRequest) -> Path:
    import subprocess

    path = Path(request.getfixturevalue("tmp_path")) / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.mark.parametrize("server", ["password", "keyboard-interactive"], indirect=True)
def test_a_vault_password_logs_in_by_password_or_keyboard_interactive(
        server: tuple[int, paramiko.PKey], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port, host_key = server
    monkeypatch.setenv("VIGIL_VAULT_PASSPHRASE", PASSPHRASE)
    Vault.open(tmp_path, create=True).set("fw", Secret("admin", password="fw-pass"))
    store = HostKeyStore(tmp_path)
    store.pin("127.0.0.1", port, host_key)
    target = Target("127.0.0.1", "linux", "fw", port, name="fw1")
    (out,) = collect(target, ["uname -a"], credential=Credentials.load(tmp_path).get("fw"), hostkeys=store)
    assert (out.text, out.exit_status) == ("Linux fw 6.1.0 x86_64\n", 0)
    Vault.open(tmp_path).set("fw", Secret("admin", password="wrong"))
    with pytest.raises(AuthFailed, match=r"fw1 \(\[127.0.0.1\]:\d+\): user 'admin' refused .* \(1 tried: password\)"):
        collect(target, ["uname -a"], credential=Credentials.load(tmp_path).get("fw"), hostkeys=store)


def test_the_vault_is_opened_once_for_many_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_VAULT_PASSPHRASE", PASSPHRASE)
    vault = Vault.open(tmp_path, create=True)
    for n in range(3):
        vault.set(f"sw{n}", Secret("netops", enable_secret=f"en{n}"))
    path = tmp_path / "credentials.yaml"
    path.write_text("".join(f"sw{n}:\n  username: netops\n  key_file: /k\n  vault: true\n" for n in range(3)))
    path.chmod(0o600)
    opened: list[Path] = []
    real = Vault.open.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Vault], data_dir: Path, *args: Any, **kwargs: Any) -> Vault:
        opened.append(data_dir)
        return real(cls, data_dir, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(Vault, "open", classmethod(counting))
    creds = Credentials.load(tmp_path)
    assert [creds.get(f"sw{n}").enable_secret() for n in range(3)] == ["en0", "en1", "en2"]
    assert len(opened) == 1
