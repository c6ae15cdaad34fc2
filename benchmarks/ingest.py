#!/usr/bin/env python3
"""Controller ingest throughput: results/s stored and acknowledged over real mutual-TLS gRPC.

Starts a controller process on SQLite, enrolls AGENTS fake agents (real certificates), and has each
stream REPORTS `ports` results as fast as the acknowledgements allow. The reference, measured in the
same run, is the raw floor of the same storage: plain sqlite3 inserting the same payloads with the
controller's durability settings (WAL, synchronous=FULL) in batches of the same size.

    python benchmarks/ingest.py [--agents 20] [--reports 1000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from agent.enroll import enroll  # noqa: E402
from proto.vigil.v1 import agent_service_pb2 as pb  # noqa: E402
from proto.vigil.v1 import agent_service_pb2_grpc as pbg  # noqa: E402
from proto.vigil.v1 import common_pb2, ports_pb2, report_pb2  # noqa: E402
from tests.e2e.harness import Controller, cli  # noqa: E402


def report(seq: int) -> report_pb2.Report:
    r = report_pb2.Report(sequence=seq, check_id="ports", check_version=1, task_id="")
    r.collected_at.FromDatetime(dt.datetime.now(dt.UTC))
    r.status.kind = common_pb2.CheckStatus.OK
    sshd = ports_pb2.PortsListener(proto="tcp", address="127.0.0.1", port=22, pid=100, process="sshd",
                                   exe="/usr/sbin/sshd", user="root", owner_known=True)
    r.ports.CopyFrom(ports_pb2.PortsResult(listeners=[sshd]))
    return r


def stream(agent_dir: Path, address: str, n: int, done: list[int]) -> None:
    creds = grpc.ssl_channel_credentials((agent_dir / "ca.pem").read_bytes(), (agent_dir / "agent.key").read_bytes(),
                                         (agent_dir / "agent.pem").read_bytes())
    with grpc.secure_channel(address, creds, [("grpc.ssl_target_name_override", "vigil-controller")]) as ch:
        def requests():  # type: ignore[no-untyped-def]
            yield pb.AgentMessage(hello=pb.Hello(agent_version="bench", hostname=agent_dir.name))
            for seq in range(1, n + 1):
                yield pb.AgentMessage(report=report(seq))
            while acked[0] < n:
                time.sleep(0.01)

        acked = [0]
        for msg in pbg.AgentChannelStub(ch).Connect(requests()):
            if msg.WhichOneof("msg") == "ack":
                acked[0] += 1
                if acked[0] >= n:
                    break
    done.append(acked[0])


def sqlite_floor(total: int, batch: int = 256) -> float:
    payload = pb.AgentMessage(report=report(1)).SerializeToString()
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(os.path.join(d, "floor.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE r (agent TEXT, seq INTEGER, raw BLOB, UNIQUE(agent, seq))")
        t0 = time.perf_counter()
        for start in range(0, total, batch):
            db.execute("BEGIN")
            db.executemany("INSERT INTO r VALUES ('a', ?, ?)", [(i, payload) for i in range(start, start + batch)])
            db.execute("COMMIT")
        elapsed = time.perf_counter() - t0
        db.close()
    return total / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--reports", type=int, default=1000, help="per agent")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ctl = Controller(Path(tmp) / "controller", heartbeat="30s")
        ctl.start()
        try:
            tokens = cli("vigil-controller", "token", "create", "--data-dir", str(ctl.data_dir),
                         "--count", str(args.agents)).stdout.split()
            dirs = []
            for i, tok in enumerate(tokens):
                d = Path(tmp) / f"agent{i}"
                enroll(ctl.address, tok, d, ctl.enroll_port)
                dirs.append(d)
            done: list[int] = []
            threads = [threading.Thread(target=stream, args=(d, ctl.address, args.reports, done)) for d in dirs]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
        finally:
            ctl.stop()
    total = sum(done)
    rate = total / elapsed
    floor = sqlite_floor(total)
    print(f"{'measure':<44}{'value':>14}{'ratio':>10}")
    print(f"{'vigil ingest, results/s (' + str(args.agents) + ' agents)':<44}{rate:>14,.0f}{'':>10}")
    print(f"{'raw sqlite3 insert floor, rows/s':<44}{floor:>14,.0f}{rate / floor:>10.2f}")
    print(f"{'target (SPEC: >= 2,000 results/s)':<44}{2000:>14,}{rate / 2000:>10.2f}")


if __name__ == "__main__":
    main()
