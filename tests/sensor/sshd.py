"""Real OpenSSH servers for the sensor's tests: Debian's ``sshd``, one per device, on loopback or on
port 22 of a network namespace host of its own (``tests/netns.py``).

Each server has its own ed25519 host key and accepts one client key; with a device configuration the
key is bound to ``fake_device.py`` as a forced command (a network device's CLI), without one it is a
plain Linux login (real commands). sshd needs root (privilege separation): without root, or without
``/usr/sbin/sshd`` (Debian's openssh-server, which ``scripts/test`` installs), the tests skip and say so.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.netns import NetnsHost

SSHD = Path("/usr/sbin/sshd")
FAKE_DEVICE = Path(__file__).with_name("fake_device.py")


def require_sshd() -> None:
    if not SSHD.exists():
        pytest.skip("needs Debian's openssh-server (/usr/sbin/sshd); ./scripts/test installs it")
    if os.geteuid() != 0:
        pytest.skip("sshd needs root for privilege separation")


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Sshd:
    """One sshd on ``host``:``port``, running until :meth:`stop`."""

    def __init__(self, workdir: Path, client_pub: Path, device: dict[str, Any] | None = None,
                 netns: NetnsHost | None = None) -> None:
        require_sshd()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        workdir.mkdir(parents=True)
        self.netns = netns
        host = netns.ip if netns is not None else "127.0.0.1"
        self.dir, self.host, self.port = workdir, host, 22 if netns is not None else free_port(host)
        self.host_key = keygen(workdir / "host_ed25519")
        options = ""
        if device is not None:
            cfg = workdir / "device.json"
            cfg.write_text(json.dumps(device))
            options = f'command="{sys.executable} {FAKE_DEVICE} {cfg}",no-port-forwarding,no-agent-forwarding '
        (workdir / "authorized_keys").write_text(options + client_pub.read_text())
        config = workdir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress {host}\nHostKey {self.host_key}\nPidFile {workdir}/sshd.pid\n"
            f"AuthorizedKeysFile {workdir}/authorized_keys\nStrictModes no\nUsePAM no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\nLogLevel VERBOSE\nMaxStartups 200\n")
        self.log = workdir / "sshd.log"
        self.proc = self._start("wb")

    def _start(self, mode: str) -> subprocess.Popen[bytes]:
        argv = [str(SSHD), "-D", "-e", "-f", str(self.dir / "sshd_config")]
        if self.netns is not None:
            argv = self.netns.exec_args(argv)
        with self.log.open(mode) as log:  # the child has its own copy of the descriptor
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
        self.proc = proc
        self._wait_listening()
        return proc

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.02)  # polling a port that is not open yet: there is no event to await
        raise RuntimeError(f"sshd did not listen within {timeout}s: {self.log.read_text()}")

    def fingerprint(self) -> str:
        out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{self.host_key}.pub"],
                             capture_output=True, text=True, check=True).stdout
        return out.split()[1]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def replace_host_key(self) -> None:
        """A re-generated host key (a replaced device, or someone in the middle): restart with a new one."""
        self.stop()
        for p in (self.host_key, Path(f"{self.host_key}.pub")):
            p.unlink()
        keygen(self.host_key)
        self._start("ab")


def copy_fixture(src: Path, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, dest_dir / src.name))
