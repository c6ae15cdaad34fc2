"""Pinned SSH host keys: a device is talked to only when it shows the key the operator accepted.

Unknown key: refused, with the host and the key's SHA256 fingerprint (as ``ssh-keygen -lf`` prints
it), so the operator can compare it with the device's console before accepting it. Acceptance is an
explicit operator action (``vigil-agent device trust``) recorded in the sensor's audit file. A key that
differs from the pinned one is refused as changed, naming both fingerprints; it is never replaced
silently.

The store is an OpenSSH ``known_hosts`` file in the sensor's data directory (``[host]:port`` for ports
other than 22), so OpenSSH's tools can read it too.
"""

from __future__ import annotations

import base64
import datetime as dt
import getpass
import hashlib
import json
import os
import socket
from pathlib import Path

import paramiko

from agent.sensor import ConnectFailed, DeviceTimeout, HostKeyChanged, UnknownHostKey

KNOWN_HOSTS = "known_hosts"
AUDIT_FILE = "sensor-audit.jsonl"


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64 without padding>``, as OpenSSH prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class HostKeyStore:
    """The pinned keys of ``data_dir/known_hosts``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / KNOWN_HOSTS
        self._keys = paramiko.HostKeys()
        if self.path.exists():
            self._keys.load(str(self.path))

    def pinned(self, host: str, port: int) -> dict[str, paramiko.PKey]:
        """Key type -> pinned key for the device; empty when none is pinned."""
        found = self._keys.lookup(host_entry(host, port))
        return dict(found) if found else {}

    def check(self, host: str, port: int, key: paramiko.PKey, label: str = "") -> None:
        """Raise UnknownHostKey or HostKeyChanged unless ``key`` is pinned for the device (``label``,
        e.g. "sw2 (10.0.0.2)", names it in the message; by default its address)."""
        pinned = self.pinned(host, port)
        where = label or host_entry(host, port)
        if not pinned:
            raise UnknownHostKey(
                f"{where}: host key not trusted ({key.get_name()} {fingerprint(key)}); compare the fingerprint "
                f"with one read at the device's console, then run "
                f"`vigil-agent device trust --data-dir {self.data_dir} --host {host} --port {port} "
                f"--fingerprint {fingerprint(key)}`")
        if any(k == key for k in pinned.values()):
            return
        before = ", ".join(f"{t} {fingerprint(k)}" for t, k in sorted(pinned.items()))
        raise HostKeyChanged(
            f"{where}: HOST KEY CHANGED: the device shows {key.get_name()} {fingerprint(key)}, but {before} is "
            f"pinned; refused (a replaced device, a re-generated key or someone in the middle). Once you have "
            f"verified the new key, run `vigil-agent device trust --data-dir {self.data_dir} --host {host} "
            f"--port {port} --fingerprint {fingerprint(key)} --replace`")

    def pin(self, host: str, port: int, key: paramiko.PKey, *, replace: bool = False) -> str | None:
        """Pin ``key`` for the device (written atomically, owner-only) and record it in the audit file.
        Returns the fingerprints it replaced, if any. Replacing a pinned key needs ``replace``."""
        entry = host_entry(host, port)
        old = self.pinned(host, port)
        if old and not replace and not any(k == key for k in old.values()):
            raise HostKeyChanged(f"{entry}: another key is pinned ({', '.join(fingerprint(k) for k in old.values())});"
                                 " add --replace to replace it")
        replaced = ", ".join(fingerprint(k) for k in old.values() if k != key) or None
        if replace and entry in self._keys:
            del self._keys[entry]
        self._keys.add(entry, key.get_name(), key)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        self._keys.save(str(tmp))
        os.replace(tmp, self.path)
        record_audit(self.data_dir, "hostkey.trust", host=host, port=port, key_type=key.get_name(),
                     fingerprint=fingerprint(key), replaced=replaced)
        return replaced


def record_audit(data_dir: Path, action: str, **details: object) -> None:
    """Append one operator action to the sensor's audit file (JSON lines, owner-only)."""
    try:
        operator = getpass.getuser()
    except (KeyError, OSError):
        operator = str(os.getuid())
    line = json.dumps({"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "action": action,
                       "operator": operator, **details}, sort_keys=True)
    fd = os.open(data_dir / AUDIT_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def open_transport(host: str, port: int, timeout: float, where: str) -> paramiko.Transport:
    """A TCP connection to the device wrapped in an SSH transport not started yet; errors name ``where``."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError as exc:
        raise DeviceTimeout(f"{where}: no TCP connection within {timeout:g}s") from exc
    except OSError as exc:
        raise ConnectFailed(f"{where}: cannot connect: {exc.strerror or exc}") from exc
    return paramiko.Transport(sock)


def presented_key(host: str, port: int, timeout: float = 15.0) -> paramiko.PKey:
    """The host key the device shows, read with an SSH handshake and nothing more (no authentication)."""
    where = host_entry(host, port)
    transport = open_transport(host, port, timeout, where)
    try:
        transport.banner_timeout = transport.handshake_timeout = timeout
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise ConnectFailed(f"{where}: SSH handshake failed: {exc or type(exc).__name__}") from exc
    finally:
        transport.close()
