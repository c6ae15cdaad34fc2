#!/usr/bin/env python3
"""FIM as a user sees it: write-to-ticket latency on loopback, and the agent's idle footprint.

1. Latency: a controller and an agent run as separate processes; the agent watches a web root. For
   each of N writes to a new file, the clock runs from the write until the ticket is visible in the
   REST API (polled every 5 ms). Reference: the target (SPEC: p99 <= 500 ms).
2. Footprint: the agent watches a tree of FILES files; once its baseline is recorded it is left idle
   and its RSS and CPU are sampled. Reference, measured in the same run: the import floor of what a
   host agent loads (psutil + watchdog + grpc + protobuf in a bare interpreter), and, to show what
   gRPC itself costs once connected, that floor holding one live mutual-TLS stream to the controller.

    python benchmarks/fim_agent.py [--writes 200] [--files 100000] [--idle-seconds 30] [--skip-latency]
"""

from __future__ import annotations

import argparse
import compileall
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _trees import small_tree  # noqa: E402

from tests.e2e.harness import AgentProc, Controller, read_only_db, wait_for  # noqa: E402

BASELINE = """baseline: bench
version: 1
rules:
  - id: WEBROOT-INTEGRITY
    check: fim
    severity: critical
    interval: 1h
    params: {{paths: ["{root}"], coalesce_ms: 20}}
    expect: {{unexpected_changes: 0}}
    refs: ["TPEx-CPA 3(8)4(3)"]
"""


def fim_results(ctl: Controller, agent_id: str) -> int:
    with read_only_db(ctl.data_dir / "controller.db") as db:
        return int(db.execute("SELECT count(*) FROM results WHERE agent_id=? AND check_id='fim'",
                              (agent_id,)).fetchone()[0])


def more_results(ctl: Controller, agent_id: str, than: int) -> bool:
    return fim_results(ctl, agent_id) > than


def stack(tmp: Path, root: Path) -> tuple[Controller, AgentProc, str]:
    ctl = Controller(tmp / "controller", heartbeat="30s")
    ctl.start()
    # Only the fim rule: replace the default baseline's other checks for a clean measurement.
    (tmp / "b.yaml").write_text(BASELINE.format(root=root))
    ctl.vigil("baseline", "apply", str(tmp / "b.yaml"))
    default = ctl.api("GET", "/baselines/tw-securities-linux")
    (tmp / "empty.yaml").write_text(
        f"baseline: tw-securities-linux\nversion: {default['version'] + 1}\nscope: {{tags: [nothing]}}\n"
        "rules:\n  - id: NOOP\n    check: agent\n    severity: low\n    expect: {max_silence: 1h}\n    refs: []\n")
    ctl.vigil("baseline", "apply", str(tmp / "empty.yaml"))
    agent = AgentProc(tmp / "agent")
    agent_id = agent.enroll(ctl)
    agent.start()
    wait_for("the fim baseline", lambda: fim_results(ctl, agent_id), timeout=600, every=0.5)
    return ctl, agent, agent_id


def latency(writes: int) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        root = tmp / "www"
        root.mkdir()
        (root / "index.html").write_text("hello\n")
        ctl, agent, _ = stack(tmp, root)
        try:
            req = urllib.request.Request(ctl.url + "/api/v1/tickets?check=fim&limit=10000")
            req.add_header("Authorization", f"Bearer {ctl.admin()}")
            out = []
            for i in range(writes):
                path = root / f"page-{i}.html"
                t0 = time.perf_counter()
                path.write_text(f"<p>{i}</p>\n")
                while True:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        if any(t["subject"] == str(path) for t in json.loads(r.read())):
                            break
                    time.sleep(0.005)
                out.append((time.perf_counter() - t0) * 1000)
            return out
        finally:
            agent.stop()
            ctl.stop()


def import_floor() -> float:
    """RSS of a bare interpreter that imported what any host agent loads: psutil, watchdog, grpc and
    protobuf's runtime.

    ``import google.protobuf`` alone loads nothing but the package's ``__init__`` (~2 MB less); the
    runtime (the upb extension, descriptors, message classes) comes with ``descriptor_pool``, which is
    what every generated ``_pb2`` module imports first, so a gRPC agent cannot have less.
    """
    code = ("import os, psutil, watchdog.observers, grpc; from google.protobuf import descriptor_pool; "
            "print(psutil.Process(os.getpid()).memory_info().rss)")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) / 2**20


# The same floor plus one live mutual-TLS AgentChannel stream, as any gRPC agent needs one: a Hello sent
# and the controller's Policy received, then idle. No agent code is imported.
_STREAM_FLOOR = r"""
import os, queue, sys, time
import psutil, watchdog.observers, grpc
from google.protobuf import descriptor_pool
from proto.vigil.v1 import agent_service_pb2 as pb, agent_service_pb2_grpc as pbg
d = sys.argv[1]
read = lambda name: open(os.path.join(d, name), "rb").read()
creds = grpc.ssl_channel_credentials(read("ca.pem"), read("agent.key"), read("agent.pem"))
channel = grpc.secure_channel(sys.argv[2], creds, [("grpc.ssl_target_name_override", "vigil-controller")])
out = queue.Queue()
out.put(pb.AgentMessage(hello=pb.Hello(agent_version="0", hostname="floor", os="linux")))
replies = pbg.AgentChannelStub(channel).Connect(iter(out.get, None))
while next(replies).WhichOneof("msg") != "policy":
    pass
time.sleep(3)
print(psutil.Process(os.getpid()).memory_info().rss, flush=True)
out.put(None)
"""


def stream_floor(ctl: Controller, agent_dir: Path) -> float:
    """RSS of the import floor holding one live stream to ``ctl`` with the (stopped) agent's identity."""
    out = subprocess.run([sys.executable, "-c", _STREAM_FLOOR, str(agent_dir), ctl.address], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[1], timeout=60)
    return int(out.stdout.split()[0]) / 2**20


def smaps(pid: int) -> dict[str, float]:
    """Resident MB of the agent by kind of mapping: the heap and anonymous memory (malloc arenas,
    thread stacks), and files (the interpreter, extension modules)."""
    out: dict[str, float] = {}
    kind = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and ":" in parts[3]:
                name = parts[5] if len(parts) > 5 else ""
                kind = "heap" if name == "[heap]" else "anon" if not name or name.startswith("[anon") \
                    else "stack" if name.startswith("[stack") else "file"
            elif parts[0] == "Rss:":
                out[kind] = out.get(kind, 0.0) + int(parts[1]) / 1024
    return out


def settle(proc: psutil.Process, limit_s: float = 300) -> float:
    """Wait until ``proc`` is idle (a 2 s window under 2 % CPU, at most ``limit_s``); returns the wait."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        a = proc.cpu_times()
        time.sleep(2)
        b = proc.cpu_times()
        if (b.user + b.system - a.user - a.system) / 2 < 0.02:
            break
    return time.monotonic() - start


def sample(proc: psutil.Process, seconds: float) -> tuple[list[float], float]:
    """RSS in MB once a second for ``seconds``, and the CPU % of a core over that time."""
    c0 = proc.cpu_times()
    t0 = time.monotonic()
    rss = []
    while time.monotonic() - t0 < seconds:
        rss.append(proc.memory_info().rss / 2**20)
        time.sleep(1)
    c1 = proc.cpu_times()
    return rss, ((c1.user + c1.system) - (c0.user + c0.system)) / (time.monotonic() - t0) * 100


def change(root: Path, edits: int, pages: int, text: str) -> None:
    """What a lived-in agent sees: ``edits`` binary files appended to, ``pages`` text files written."""
    for _, path in zip(range(edits), root.rglob("*.dat"), strict=False):
        with open(path, "ab") as f:
            f.write(b"x")
    for i in range(pages):
        (root / f"page-{i}.html").write_text(f"<p>{i} {text}</p>\n")


def footprint(files: int, seconds: float) -> tuple[float, float, float, float, float]:
    """Median and max idle RSS, idle CPU %, the live-stream floor, and the median idle RSS once the
    agent has reported a few hundred real-time changes."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        root = tmp / "tree"
        small_tree(root, files)
        ctl, agent, agent_id = stack(tmp, root)
        try:
            assert agent.proc is not None
            proc = psutil.Process(agent.proc.pid)
            # After the baseline the agent still has bounded background work (the copies text diffs
            # need, at the throughput cap): wait until it is done before sampling the idle agent.
            print(f"settled {settle(proc):.0f} s after the baseline", file=sys.stderr)
            rss, cpu = sample(proc, seconds)
            print("agent RSS by mapping, MB: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(smaps(proc.pid).items())),
                  file=sys.stderr)
            # Then a lived-in agent: binary files changed, text pages created and then edited (diffs).
            for edits, text in ((300, "new"), (0, "edited")):
                reported = functools.partial(more_results, ctl, agent_id, fim_results(ctl, agent_id))
                change(root, edits, 30, text)
                wait_for("the changes reported", reported, timeout=120)
            done = time.monotonic()
            settle(proc)
            # Idle means no change for a while: after 10 s without one the agent gives back the SQLite
            # pages and heap a burst used (checks/fim/check.py), so sampling starts 12 s after the last.
            time.sleep(max(0.0, done + 12 - time.monotonic()))
            lived, _ = sample(proc, min(seconds, 10))
            agent.stop()
            return statistics.median(rss), max(rss), cpu, stream_floor(ctl, agent.data_dir), statistics.median(lived)
        finally:
            agent.stop()
            ctl.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--skip-latency", action="store_true", help="measure the footprint only")
    args = ap.parse_args()
    print(f"{'measure':<52}{'value':>10}{'ratio':>8}{'/stream':>9}")
    if not args.skip_latency:
        lat = sorted(latency(args.writes))
        p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"{'write -> ticket in API, p50 ms (' + str(args.writes) + ' writes)':<52}{p50:>10.0f}{p50 / 500:>8.2f}")
        print(f"{'write -> ticket in API, p99 ms (target 500)':<52}{p99:>10.0f}{p99 / 500:>8.2f}")
    # As an installed package has it: bytecode compiled (this checkout may run with PYTHONDONTWRITEBYTECODE,
    # and an agent compiling its modules at start keeps ~1 MB more heap).
    for package in ("agent", "checks", "common", "proto"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    floor = import_floor()
    rss_med, rss_max, cpu, live, lived = footprint(args.files, args.idle_seconds)
    print(f"{'import floor psutil+watchdog+grpc+protobuf, MB':<52}{floor:>10.1f}{1:>8.2f}")
    print(f"{'  the same + one live mTLS stream, no agent code, MB':<52}{live:>10.1f}{live / floor:>8.2f}"
          f"{1:>9.2f}")
    for label, rss in ((f"agent idle RSS watching {args.files:,} files, MB", rss_med),
                       ("agent idle RSS max, MB", rss_max),
                       ("  the same after 360 real-time change events, MB", lived)):
        print(f"{label:<52}{rss:>10.1f}{rss / floor:>8.2f}{rss / live:>9.2f}")
    print(f"{'agent idle CPU, % of a core (target < 1)':<52}{cpu:>10.2f}{'':>8}")
    print("ratios: latency / 500 ms target (<= 1 meets it); RSS / import floor; /stream: RSS / the live-stream")
    print("floor (target: idle <= 1.15 and <= 48 MB)")


if __name__ == "__main__":
    main()
