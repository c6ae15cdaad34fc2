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
    mods = {"vigil": "controller.cli.operator", "vigil-agent": "agent.cli",
            "vigil-controller": "controller.cli.controller"}
    cmd = [sys.executable, "-m", mods[args[0]], *args[1:]]
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


class Controller:
    def __init__(self, data_dir: Path, heartbeat: str = "1s", db_url: str | None = None) -> None:
        self.data_dir = data_dir
        # The database, when not SQLite under data_dir: serve and the admin commands all get --db.
        self.db = ["--db", db_url] if db_url else []
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
        cmd = [sys.executable, "-m", "controller.cli.controller", "serve", "--data-dir", str(self.data_dir), *self.db,
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
            cli("vigil-controller", "user", "create", "--data-dir", str(self.data_dir), *self.db,
                "--username", "root-admin", "--role", "admin", "--password-stdin", input=PASSWORD + "\n")
            self.key = self.api_key("root-admin")
        return self.key

    def api_key(self, username: str) -> str:
        return cli("vigil-controller", "apikey", "create", "--data-dir", str(self.data_dir), *self.db,
                   "--username", username).stdout.strip()

    def token(self, *extra: str) -> str:
        return cli("vigil-controller", "token", "create", "--data-dir", str(self.data_dir), *self.db,
                   *extra).stdout.strip()

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
        self.start_with(None)

    def start_with(self, config: Path | None) -> None:
        """Start the agent, with the agent config file ``config`` when given (``--config``)."""
        extra = ["--config", str(config)] if config is not None else []
        with open(self.log, "ab") as logf:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "--data-dir", str(self.data_dir), *extra],
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


# --- Helpers for the trust and durability tests -------------------------------------------------------

def restart(ctl: Controller) -> None:
    """Start ``ctl`` again on the same ports and data directory, after ``kill9`` or ``stop``."""
    assert ctl.proc is None or ctl.proc.poll() is not None, "the controller is still running"
    ctl.start()


def metric(ctl: Controller, name: str) -> float:
    """The value of a Prometheus metric from GET /api/v1/metrics (summed over its labels)."""
    with urllib.request.urlopen(ctl.url + "/api/v1/metrics", timeout=5) as r:
        text = r.read().decode()
    values = [float(line.rpartition(" ")[2]) for line in text.splitlines()
              if line.startswith((name + " ", name + "{"))]
    if not values:
        raise KeyError(f"no metric {name} in /metrics")
    return sum(values)


def read_only_db(path: Path) -> contextlib.closing[Any]:
    """A read-only sqlite3 connection to ``path`` (closed by the ``with`` block)."""
    import sqlite3

    return contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30))


def spool_depth(data_dir: Path) -> int:
    """How many results wait in the agent's on-disk spool, read beside the running agent."""
    with read_only_db(data_dir / "spool.db") as db:
        return int(db.execute("SELECT count(*) FROM reports").fetchone()[0])


def ports_report(seq: int, port: int = 2222, collected_at: Any = None, incarnation: str = "") -> Any:
    """An AgentMessage carrying a real ``ports`` Report (one listener), as the agent would send it
    (``incarnation``: the spool incarnation it names, "" for the stream's)."""
    import datetime as dt

    from proto.vigil.v1 import agent_service_pb2 as pb
    from proto.vigil.v1 import common_pb2, ports_pb2, report_pb2

    report = report_pb2.Report(
        sequence=seq, check_id="ports", check_version=1,
        status=common_pb2.CheckStatus(kind=common_pb2.CheckStatus.OK, duration_ms=1.0),
        ports=ports_pb2.PortsResult(listeners=[ports_pb2.PortsListener(
            proto="tcp", address="0.0.0.0", port=port, pid=4242, process="rogue", exe="/tmp/rogue", user="nobody",
            owner_known=True)]),
        incarnation=incarnation,
    )
    report.collected_at.FromDatetime(collected_at or dt.datetime.now(dt.UTC))
    return pb.AgentMessage(report=report)


class AgentStream:
    """A hand-driven agent: the real AgentChannel/Connect stream over mutual TLS, messages crafted by the test.

    ``key``/``cert``/``ca`` are PEM bytes (``cert``/``key`` None: no client certificate). Responses are read
    on a thread; ``next(kind)`` returns the next one of that kind, ``refused()`` the RpcError that ended it.
    """

    _END = object()

    def __init__(self, address: str, ca: bytes, key: bytes | None = None, cert: bytes | None = None) -> None:
        import queue
        import threading

        import grpc

        from proto.vigil.v1 import agent_service_pb2_grpc as pbg

        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        self.channel = grpc.secure_channel(address, creds, [("grpc.ssl_target_name_override", "vigil-controller")])
        self._out: queue.Queue[Any] = queue.Queue()
        self._in: queue.Queue[Any] = queue.Queue()
        self.error: Any = None
        self.call = pbg.AgentChannelStub(self.channel).Connect(iter(self._out.get, self._END))
        self._reader = threading.Thread(target=self._read, name="fake-agent-reader", daemon=True)
        self._reader.start()

    @classmethod
    def of(cls, address: str, data_dir: Path) -> AgentStream:
        """A stream with the credentials an enrolled agent keeps in ``data_dir``."""
        return cls(address, (data_dir / "ca.pem").read_bytes(), (data_dir / "agent.key").read_bytes(),
                   (data_dir / "agent.pem").read_bytes())

    def _read(self) -> None:
        import grpc

        try:
            for msg in self.call:
                self._in.put(msg)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self._in.put(None)

    def send(self, msg: Any) -> None:
        self._out.put(msg)

    def hello(self, incarnation: str = "", note: str = "") -> None:
        """Send a Hello; ``incarnation`` and ``note``: its spool incarnation and why that began."""
        from proto.vigil.v1 import agent_service_pb2 as pb
        from proto.vigil.v1 import common_pb2

        self.send(pb.AgentMessage(hello=pb.Hello(
            agent_version="0.0.0-test", hostname="fake-agent", os="linux test",
            checks=[common_pb2.CheckCapability(check_id="ports", version=1),
                    common_pb2.CheckCapability(check_id="agent", version=1)],
            spool_incarnation=incarnation, incarnation_note=note)))

    def next(self, kind: str, timeout: float = 15.0) -> Any:
        """The next ControllerMessage payload of ``kind`` ("ack", "policy", "command"), skipping others."""
        import queue

        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self._in.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {kind} from the controller within {timeout}s") from None
            if msg is None:
                self._in.put(None)
                raise AssertionError(f"the stream ended before a {kind} arrived: {self.error!r}")
            if msg.WhichOneof("msg") == kind:
                return getattr(msg, kind)

    def refused(self, timeout: float = 15.0) -> Any:
        """The RpcError that ended the stream (fails if the stream yields a message first)."""
        import queue

        try:
            msg = self._in.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the stream was not refused within {timeout}s") from None
        assert msg is None, f"the controller answered a stream it should have refused: {msg}"
        self._in.put(None)
        assert self.error is not None
        return self.error

    def ended(self, timeout: float = 15.0) -> Any:
        """Wait for the controller to end the stream (skipping messages); the RpcError, or None if it ended OK."""
        import queue

        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self._in.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the controller did not end the stream within {timeout}s") from None
            if msg is None:
                self._in.put(None)
                return self.error

    def close(self) -> None:
        self._out.put(self._END)
        self.call.cancel()
        self._reader.join(10)
        self.channel.close()

    def __enter__(self) -> AgentStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
