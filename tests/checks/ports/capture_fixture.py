"""Capture real ``psutil`` socket output as JSON fixtures for ``tests/checks/ports/test_parse.py``.

Two modes; both need only the standard library and psutil, so the script runs under any Python
that has psutil (including a system Python as ``nobody``, which cannot read root's pyenv):

``dump``
    Print ``psutil.net_connections(kind="inet")`` and the name/exe/username of every pid seen, the
    same raw input ``Ports.collect()`` gathers, as JSON on stdout.

``record`` (Linux, as root)
    Start a known set of sockets, ``dump`` as root and as ``nobody`` (where psutil reports other
    users' sockets with ``pid=None``), write ``linux_root.json`` and ``linux_nonroot.json`` with a
    ``started`` section naming the pid and purpose of each socket, then stop everything::

        python tests/checks/ports/capture_fixture.py record --out tests/checks/ports/fixtures

Sockets started by ``record`` (ports are fixed so tests can name them):

=====================  ======================  ===========================================
owner                  socket                  why
=====================  ======================  ===========================================
root ``http.server``   tcp 127.0.0.1:18080     plain IPv4 listener
root ``http.server``   tcp6 ::1:18081          IPv6 listener
nobody ``http.server`` tcp 127.0.0.1:18082     another user's listener (pid=None as nobody)
root holder            udp 127.0.0.1:18053     UDP "listener": bound, not connected
root holder            udp6 ::1:18054          IPv6 UDP listener
root holder            udp 127.0.0.1:18056     connected UDP: must be excluded
root holder            tcp 0.0.0.0:18083       IPv4 wildcard listener
root holder            tcp6 :::18084           dual-stack wildcard listener
root holder            tcp 127.0.0.1:18086 x2  SO_REUSEPORT siblings in one process: dedupe
root holder            tcp -> :18080, :18082   ESTABLISHED client sockets: must be excluded
=====================  ======================  ===========================================

The holder sets its ``comm`` to ``vigil-fixture`` so psutil reports a recognisable process name.
Linux psutil 7 neither lists bound-but-not-listening TCP sockets (the kernel does not show them in
``/proc/net/tcp``) nor repeats a socket reachable through two fds of one process, so neither is
set up; it does list SO_REUSEPORT siblings separately as root, and as nobody it folds them into one
row (identical ``fd=-1, pid=None`` tuples collapse in its result set). The ``_wait_listening``
probes leave TIME_WAIT rows with ``pid=None`` even as root: non-listening unknown-owner rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

_PORTS = {
    "http_root": 18080,
    "http_root_v6": 18081,
    "http_nobody": 18082,
    "udp": 18053,
    "udp6": 18054,
    "udp_connected": 18056,
    "tcp_any": 18083,
    "tcp6_dualstack": 18084,
    "tcp_reuseport": 18086,
}

_HOLDER = r"""
import socket, sys
P = {ports!r}
with open("/proc/self/comm", "w") as f:
    f.write("vigil-fixture")
keep = []
def sock(family, kind, addr, reuseport=False, v6only=None):
    s = socket.socket(family, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind(addr)
    if kind == socket.SOCK_STREAM:
        s.listen()
    keep.append(s)
    return s
A4, A6, T, U = socket.AF_INET, socket.AF_INET6, socket.SOCK_STREAM, socket.SOCK_DGRAM
sock(A4, U, ("127.0.0.1", P["udp"]))
sock(A6, U, ("::1", P["udp6"]))
sock(A4, U, ("127.0.0.1", P["udp_connected"])).connect(("127.0.0.1", P["udp"]))
sock(A4, T, ("0.0.0.0", P["tcp_any"]))
sock(A6, T, ("::", P["tcp6_dualstack"]), v6only=0)
sock(A4, T, ("127.0.0.1", P["tcp_reuseport"]), reuseport=True)
sock(A4, T, ("127.0.0.1", P["tcp_reuseport"]), reuseport=True)
for port in (P["http_root"], P["http_nobody"]):
    keep.append(socket.create_connection(("127.0.0.1", port)))
print("ready", flush=True)
sys.stdin.read()
"""


def _proc_info(pid: int) -> dict[str, str]:
    # Mirrors checks.ports.check._proc_info: field by field, "" where psutil refuses.
    out = {"name": "", "exe": "", "username": ""}
    try:
        proc = psutil.Process(pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return out
    for field in out:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            out[field] = getattr(proc, field)()
    return out


def _addr(addr: Any) -> list[Any]:
    return [addr.ip, addr.port] if addr else []


def dump() -> dict[str, Any]:
    conns = psutil.net_connections(kind="inet")
    rows = [
        {
            "fd": c.fd,
            # Names, not numbers: AF_INET6 is 10 on Linux, 30 on macOS, 23 on Windows.
            "family": getattr(c.family, "name", str(c.family)),
            "type": getattr(c.type, "name", str(c.type)),
            "laddr": _addr(c.laddr),
            "raddr": _addr(c.raddr),
            "status": c.status,
            "pid": c.pid,
        }
        for c in conns
    ]
    pids = sorted({c.pid for c in conns if c.pid is not None})
    return {
        "schema": 1,
        "captured_by": "tests/checks/ports/capture_fixture.py dump",
        "host": {
            "platform": sys.platform,
            "release": platform.release(),
            "python": platform.python_version(),
            "psutil": psutil.__version__,
            "euid": os.geteuid() if hasattr(os, "geteuid") else None,
            "user": psutil.Process().username(),
            "captured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "connections": rows,
        "processes": {str(pid): _proc_info(pid) for pid in pids},
    }


def _wait_listening(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def record(out_dir: Path, nobody_python: str) -> None:
    import pwd  # record is Linux-only; dump also runs where there is no pwd

    if os.geteuid() != 0:
        sys.exit("record must run as root: it starts a service as nobody and captures as both users")
    out_dir.mkdir(parents=True, exist_ok=True)
    nobody = pwd.getpwnam("nobody")
    scratch = Path(tempfile.mkdtemp(prefix="vigil-ports-capture-"))
    procs: list[subprocess.Popen[str]] = []
    try:
        # nobody cannot read root's site-packages (e.g. pyenv under /root), so give it a copy of psutil
        # (its extension is abi3) and of this script in a world-readable scratch directory.
        shutil.copytree(Path(psutil.__file__).parent, scratch / "lib" / "psutil")
        shutil.copy(__file__, scratch / "capture_fixture.py")
        (scratch / "www").mkdir()
        for path in [scratch, *scratch.rglob("*")]:
            path.chmod(0o755)
        as_nobody: dict[str, Any] = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}

        def start(cmd: list[str], **kw: Any) -> subprocess.Popen[str]:
            # http.server logs to stdout and stderr; only the holder's stdout is read.
            kw.setdefault("stdout", subprocess.DEVNULL)
            kw.setdefault("stderr", subprocess.DEVNULL)
            proc = subprocess.Popen(cmd, cwd=scratch / "www", text=True, **kw)
            procs.append(proc)
            return proc

        http = [sys.executable, "-m", "http.server"]
        http_root = start([*http, str(_PORTS["http_root"]), "--bind", "127.0.0.1"])
        http_root_v6 = start([*http, str(_PORTS["http_root_v6"]), "--bind", "::1"])
        http_nobody = start(
            [nobody_python, "-m", "http.server", str(_PORTS["http_nobody"]), "--bind", "127.0.0.1"],
            **as_nobody,
        )
        _wait_listening(_PORTS["http_root"])
        _wait_listening(_PORTS["http_root_v6"], "::1")
        _wait_listening(_PORTS["http_nobody"])
        holder = start(
            [sys.executable, "-c", _HOLDER.format(ports=_PORTS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
        )
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != "ready":
            sys.exit("socket holder failed to start")
        started = {
            "ports": _PORTS,
            "pids": {
                "http_root": http_root.pid,
                "http_root_v6": http_root_v6.pid,
                "http_nobody": http_nobody.pid,
                "holder": holder.pid,
            },
        }

        root_dump = dump()
        nonroot_dump = json.loads(
            subprocess.run(
                [nobody_python, str(scratch / "capture_fixture.py"), "dump"],
                env={"PYTHONPATH": str(scratch / "lib"), "PATH": "/usr/bin:/bin"},
                cwd=scratch,
                capture_output=True,
                text=True,
                check=True,
                **as_nobody,
            ).stdout
        )
        for name, data in (("linux_root.json", root_dump), ("linux_nonroot.json", nonroot_dump)):
            data["captured_by"] = "tests/checks/ports/capture_fixture.py record"
            data["started"] = started
            (out_dir / name).write_text(json.dumps(data, indent=1) + "\n")
            print(f"wrote {out_dir / name}: {len(data['connections'])} connections")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("dump", help="print psutil's view of inet sockets as JSON")
    rec = sub.add_parser("record", help="start known sockets and capture them as root and as nobody")
    rec.add_argument("--out", type=Path, default=Path(__file__).parent / "fixtures")
    rec.add_argument(
        "--nobody-python", default="/usr/bin/python3", help="a Python that nobody can execute (default %(default)s)"
    )
    args = parser.parse_args()
    if args.mode == "dump":
        json.dump(dump(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        record(args.out, args.nobody_python)


if __name__ == "__main__":
    main()
