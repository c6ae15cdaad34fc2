"""Nothing is lost, nothing is stored twice: real controller and agent processes, the controller killed under load.

SPEC section 7: the controller stores each (agent, sequence) exactly once, and results wait in the agent's
spool while the controller is unreachable or restarting.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from agent.spool import Spool
from tests.e2e.harness import (
    AgentProc,
    Controller,
    metric,
    ports_report,
    read_only_db,
    restart,
    spool_depth,
    wait_for,
)

N = 3000


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Controller, AgentProc, str]]:
    ctl = Controller(tmp_path / "controller")
    ctl.start()
    agent = AgentProc(tmp_path / "agent")
    try:
        agent_id = agent.enroll(ctl)
        yield ctl, agent, agent_id
    finally:
        agent.stop()
        ctl.stop()


def spool_reports(data_dir: Path, n: int) -> None:
    """Spool ``n`` real ports reports the way ``agent.main.Agent.deliver`` does: the sequence is set in ``put``."""
    msg = ports_report(0)

    def build(seq: int) -> bytes:
        msg.report.sequence = seq
        return bytes(msg.SerializeToString())

    spool = Spool(data_dir / "spool.db")
    try:
        for _ in range(n):
            assert spool.put(build) is not None
    finally:
        spool.close()


def stored_sequences(ctl: Controller, agent_id: str) -> tuple[list[int], list[tuple[int, int]]]:
    """(sorted sequences stored for the agent, [(sequence, count)] stored more than once), read-only."""
    with read_only_db(ctl.data_dir / "controller.db") as db:
        seqs = [int(r[0]) for r in db.execute(
            "SELECT sequence FROM results WHERE agent_id = ? ORDER BY sequence", (agent_id,))]
        dups = [(int(s), int(c)) for s, c in db.execute(
            "SELECT sequence, count(*) FROM results WHERE agent_id = ? GROUP BY sequence HAVING count(*) > 1",
            (agent_id,))]
    return seqs, dups


def stored_at_least(ctl: Controller, n: float) -> bool:
    return metric(ctl, "vigil_results_stored") >= n


def settled(ctl: Controller, agent: AgentProc) -> float | None:
    """The stored count once the agent's spool is empty and the count stopped moving, else None."""
    if spool_depth(agent.data_dir) != 0:
        return None
    before = metric(ctl, "vigil_results_stored")
    time.sleep(0.3)  # steady over a short window, not just between two reads
    if spool_depth(agent.data_dir) != 0 or metric(ctl, "vigil_results_stored") != before:
        return None
    return before or None


def assert_exactly_once(ctl: Controller, agent: AgentProc, agent_id: str, must_include: int) -> list[int]:
    """Stop both, then check the controller's table against every sequence the agent ever assigned."""
    agent.stop()
    ctl.stop()
    seqs, dups = stored_sequences(ctl, agent_id)
    assert dups == [], f"sequences stored more than once: {dups[:10]}"
    assert seqs, "nothing was stored"
    assert seqs == list(range(1, seqs[-1] + 1)), (
        f"gaps in the stored sequences: missing {sorted(set(range(1, seqs[-1] + 1)) - set(seqs))[:20]}")
    assert seqs[-1] >= must_include
    spool = Spool(agent.data_dir / "spool.db")
    try:
        stats = spool.stats()
        pending = [seq for seq, _ in spool.pending(0, 10**6)]
    finally:
        spool.close()
    # Every sequence the agent ever assigned is stored, or (only if the agent ran a check in the last
    # moment before it was stopped) still waits in its spool. None was dropped.
    assert stats["dropped"] == 0
    assert set(seqs) | set(pending) == set(range(1, stats["next_seq"])), (len(seqs), pending, stats)
    return seqs


def test_kill9_of_the_controller_while_an_agent_reports_loses_and_duplicates_nothing(stack) -> None:
    ctl, agent, agent_id = stack
    spool_reports(agent.data_dir, N)
    assert spool_depth(agent.data_dir) == N
    agent.start()
    kills = []
    for fraction in (0.1, 0.4, 0.7):
        wait_for(f"{fraction:.0%} of the backlog stored", partial(stored_at_least, ctl, N * fraction), timeout=60)
        at = metric(ctl, "vigil_results_stored")
        ctl.kill9()  # mid-stream: a batch may be committed with its acks never sent, or half-written
        kills.append(at)
        assert at < N, f"the backlog drained before the kill at {fraction:.0%} ({at} stored)"
        restart(ctl)
    assert agent.proc is not None and agent.proc.poll() is None, "the agent died with the controller"
    total = wait_for("the spool drained and the stored count steady", lambda: settled(ctl, agent), timeout=90)
    assert total >= N
    seqs = assert_exactly_once(ctl, agent, agent_id, N)
    assert set(range(1, N + 1)) <= set(seqs)
    assert kills == sorted(kills) and len(set(kills)) == 3


def test_results_wait_in_the_spool_while_the_controller_is_down(stack) -> None:
    ctl, agent, agent_id = stack
    agent.start()
    # The agent connects, receives its policy (saved to disk) and delivers its first results.
    wait_for("first results stored", lambda: settled(ctl, agent), timeout=60)
    assert (agent.data_dir / "policy.pb").exists()
    first = metric(ctl, "vigil_results_stored")

    ctl.stop()
    # With the controller down, the agent restarts and runs its checks from the saved policy: results
    # can only go to the spool.
    agent.stop()
    agent.start()
    depth = wait_for("results spooled while the controller is down", lambda: spool_depth(agent.data_dir) or None,
                     timeout=60)
    assert depth > 0
    # More of them, as a burst of collection would leave (the agent keeps the spool file open meanwhile).
    prefill_more = 200
    spool_reports(agent.data_dir, prefill_more)
    assert spool_depth(agent.data_dir) >= depth + prefill_more
    assert agent.proc is not None and agent.proc.poll() is None

    restart(ctl)
    total = wait_for("the spool drained after the restart", lambda: settled(ctl, agent), timeout=60)
    assert total >= first + depth + prefill_more
    assert_exactly_once(ctl, agent, agent_id, int(first + depth + prefill_more))
