#!/usr/bin/env python3
"""Durability under load: results spooled by an agent while the controller is killed (-9) repeatedly.

An enrolled agent's spool is filled with REPORTS real results; the agent drains it into a controller
that is killed with SIGKILL KILLS times at evenly spaced points of the drain and restarted on the same
ports and data. Afterwards the controller's database must hold every sequence 1..REPORTS exactly once.
Reference, measured in the same run: the same drain with no kills (how long exactly-once costs).

    python benchmarks/durability.py [--reports 20000] [--kills 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import AgentProc, Controller, metric, read_only_db, restart, spool_depth, wait_for  # noqa: E402
from tests.e2e.test_durability import spool_reports  # noqa: E402


def drain(reports: int, kills: int) -> tuple[float, int, int, int]:
    """Seconds to deliver everything; stored, duplicated, missing counts."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ctl = Controller(tmp / "controller", heartbeat="30s")
        ctl.start()
        agent = AgentProc(tmp / "agent")
        agent_id = agent.enroll(ctl)
        spool_reports(agent.data_dir, reports)
        t0 = time.monotonic()
        agent.start()
        try:
            for k in range(1, kills + 1):
                mark = reports * k // (kills + 1)
                wait_for(f"{mark} stored", lambda m=mark: metric(ctl, "vigil_results_stored") >= m,  # type: ignore[misc]
                         timeout=300, every=0.02)
                ctl.kill9()
                restart(ctl)
            wait_for("the spool drained", lambda: spool_depth(agent.data_dir) == 0, timeout=600, every=0.1)
            elapsed = time.monotonic() - t0
            with read_only_db(ctl.data_dir / "controller.db") as db:
                seqs = [s for (s,) in db.execute("SELECT sequence FROM results WHERE agent_id=?", (agent_id,))]
        finally:
            agent.stop()
            ctl.stop()
    wanted = set(range(1, reports + 1))
    return elapsed, len(seqs), len(seqs) - len(set(seqs)), len(wanted - set(seqs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reports", type=int, default=20_000)
    ap.add_argument("--kills", type=int, default=10)
    args = ap.parse_args()
    base = drain(args.reports, 0)
    killed = drain(args.reports, args.kills)
    print(f"{'run':<40}{'seconds':>9}{'stored':>9}{'dupes':>7}{'missing':>9}{'ratio':>8}")
    for name, (secs, stored, dup, miss) in (("no kills (reference)", base), (f"{args.kills} x kill -9", killed)):
        print(f"{name:<40}{secs:>9.1f}{stored:>9}{dup:>7}{miss:>9}{secs / base[0]:>8.2f}")
    print("target: 0 lost, 0 duplicated across 10 kill -9 restarts (ratio = seconds / reference)")


if __name__ == "__main__":
    main()
