"""The agent when its spool is full: the producer hears of the drop, the task runs again once there is room,
and the agent's health says when the episode recovered."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.main import Agent, AgentConfig
from agent.scheduler import Scheduler
from agent.state import Identity
from checks.base import Undelivered
from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import report_pb2


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    Identity(agent_id="a-1", controller="127.0.0.1:9", enrolled_at="").save(tmp_path)
    a = Agent(tmp_path, AgentConfig(spool_max_mb=64 / 1024))  # 64 KiB
    try:
        yield a
    finally:
        a.stop()
        a.close()


FILLER = "filler"


def filler(agent: Agent) -> int:
    """Fill the spool to its bound with one report; returns its sequence."""
    room = agent.spool.max_bytes - int(agent.spool.stats()["bytes"])
    msg = pb.AgentMessage(report=report_pb2.Report(check_id=FILLER))
    msg.report.status.message = "f" * (room - 64)
    while len(msg.SerializeToString()) < room:
        msg.report.status.message += "f"
    seq = agent.spool.put(lambda s: msg.SerializeToString())
    assert seq is not None
    return seq


def reports(agent: Agent) -> list[report_pb2.Report]:
    """The reports queued in the spool, but the filler."""
    got = [pb.AgentMessage.FromString(p).report for _, p in agent.spool.pending(limit=1000)]
    return [r for r in got if r.check_id != FILLER]


def wait_until(what: str, agent: Agent, cond: object, timeout: float = 30.0) -> None:
    """Wait for ``cond()`` on each change of the spool (a put wakes it), failing at the deadline."""
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {what}"
        agent.spool.changed.wait(min(left, 0.5))
        agent.spool.changed.clear()


def test_deliver_stamps_the_incarnation_and_raises_when_the_spool_is_full(agent: Agent) -> None:
    report = report_pb2.Report(check_id="ports", check_version=1, task_id="t-ports")
    agent.deliver(report)
    [stored] = reports(agent)
    assert stored.incarnation == agent.spool.incarnation and len(stored.incarnation) == 32
    assert stored.sequence == 1

    filler(agent)
    with pytest.raises(Undelivered, match="full"):
        agent.deliver(report_pb2.Report(check_id="ports", check_version=1, task_id="t-ports"))
    assert agent.spool.dirty() == [("t-ports", "ports", 1, False)]
    assert agent.spool.stats()["dropped"] == 1


def test_the_scheduler_returns_the_failure_of_a_run_it_could_not_queue(agent: Agent) -> None:
    filler(agent)
    sched: Scheduler = agent.scheduler
    assert sched._run(pb.Task(task_id="t-ports", check_id="ports", interval_s=60)) is False
    agent.spool.ack([1])
    assert sched._run(pb.Task(task_id="t-ports", check_id="ports", interval_s=60)) is True
    assert agent.spool.dirty() == []


def test_a_dropped_task_runs_again_once_there_is_room_and_health_is_reported_at_once(agent: Agent) -> None:
    policy = pb.Policy(policy_id="p1", tasks=[pb.Task(task_id="t-ports", check_id="ports", interval_s=3600),
                                              pb.Task(task_id="t-agent", check_id="agent", interval_s=3600)])
    big = filler(agent)
    agent.scheduler.apply_policy(policy)
    # The scheduler runs; recovery needs no thread of its own (the spool calls Agent.recover).
    threading.Thread(target=agent.scheduler.loop, daemon=True).start()
    # Both run at once; the ports result does not fit (the agent's own health may use twice the bound).
    wait_until("the ports result to be dropped", agent, lambda: agent.spool.stats()["dropped"] >= 1)
    wait_until("the first health result", agent, lambda: any(r.check_id == "agent" for r in reports(agent)))
    assert ("t-ports", "ports") in {(t, c) for t, c, _, _ in agent.spool.dirty()}
    assert not any(r.check_id == "ports" for r in reports(agent))

    agent.spool.ack([big])  # the controller took the backlog: room again

    def recovered() -> bool:
        healths = [r.agent for r in reports(agent) if r.check_id == "agent"]
        return any(r.check_id == "ports" for r in reports(agent)) and any(
            h.pending_recovery == 0 and h.dropped_records >= 1 for h in healths)

    wait_until("the ports task to run again and the health to say it recovered", agent, recovered)
    health = [r.agent for r in reports(agent) if r.check_id == "agent"][-1]
    assert health.spool_incarnation == agent.spool.incarnation
    assert health.dropped_total >= 1 and health.quarantined_records == 0
    assert agent.spool.dirty() == []
