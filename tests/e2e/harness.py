"""Real processes for end-to-end tests: a controller and agents started as separate commands on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Correct-Horse-42-battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 30.0, every: float = 0.05) -> T:
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = fn()
        except Exception as exc:  # the thing waited for may not exist yet
            value, last = None, exc
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


def cli(*args: str, input: str | None = None, check: bool = True, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run one of our console scripts through the current interpreter."""
    mods = {"vigil": "controller.opcli", "vigil-agent": "agent.cli", "vigil-controller": "controller.cli"}
    cmd = [sys.executable, "-m", mods[args[0]], *args[1:]]
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


class Controller:
    def __init__(self, data_dir: Path, heartbeat: str = "1s") -> None:
        self.data_dir = data_dir
        self.grpc_port = free_port()
        self.enroll_port = free_port()
        self.http_port = free_port()
        self.heartbeat = heartbeat
        self.proc: subprocess.Popen[bytes] | None = None
        self.key = ""
        self.log = data_dir.parent / f"{data_dir.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "controller.cli", "serve", "--data-dir", str(self.data_dir),
               "--grpc", self.address, "--enroll", f"127.0.0.1:{self.enroll_port}",
               "--http", f"127.0.0.1:{self.http_port}", "--heartbeat", self.heartbeat]
        with open(self.log, "ab") as logf:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT)
        wait_for("controller /healthz", self._healthy, timeout=60)

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"controller exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
        with urllib.request.urlopen(self.url + "/api/v1/healthz", timeout=2) as r:
            return bool(r.status == 200)

    def admin(self) -> str:
        """Create an admin user and return its API key (once)."""
        if not self.key:
            cli("vigil-controller", "user", "create", "--data-dir", str(self.data_dir), "--username", "root-admin",
                "--role", "admin", "--password-stdin", input=PASSWORD + "\n")
            self.key = self.api_key("root-admin")
        return self.key

    def api_key(self, username: str) -> str:
        return cli("vigil-controller", "apikey", "create", "--data-dir", str(self.data_dir),
                   "--username", username).stdout.strip()

    def token(self, *extra: str) -> str:
        return cli("vigil-controller", "token", "create", "--data-dir", str(self.data_dir), *extra).stdout.strip()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def api(self, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + "/api/v1" + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {key or self.admin()}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def vigil(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return cli("vigil", "--url", self.url, "--api-key", self.admin(), *args, check=check)


class AgentProc:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{data_dir.name}.log"

    def enroll(self, ctl: Controller, token: str | None = None) -> str:
        out = cli("vigil-agent", "enroll", "--controller", ctl.address, "--token", token or ctl.token(),
                  "--data-dir", str(self.data_dir), "--enroll-port", str(ctl.enroll_port), "--json")
        return str(json.loads(out.stdout)["agent_id"])

    def start(self) -> None:
        with open(self.log, "ab") as logf:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "--data-dir", str(self.data_dir)],
                cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def listener(host: str = "127.0.0.1") -> Iterator[int]:
    """A real TCP listener owned by this process, closed on exit."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(8)
    try:
        yield int(s.getsockname()[1])
    finally:
        s.close()
