"""Continuous work of checks in the agent: started by policy tasks, stopped with them, reporting at once."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct

from agent.main import Agent
from agent.runner import run_check
from agent.scheduler import Scheduler
from agent.state import check_state_dir, prune_state_dirs
from agent.watchers import Watchers
from checks.base import Args, Check, CheckError, Context, Result
from checks.fim import Fim, FimResult
from proto.vigil.v1 import agent_pb2, report_pb2
from proto.vigil.v1 import agent_service_pb2 as pb


def _task(task_id: str, check_id: str, params: dict[str, Any] | None = None, interval_s: int = 3600) -> pb.Task:
    s = Struct()
    s.update(params or {})
    return pb.Task(task_id=task_id, check_id=check_id, interval_s=interval_s, params=s)


class _Res(Result):
    def __init__(self, n: int) -> None:
        self.n = n

    def to_proto(self) -> agent_pb2.AgentResult:
        return agent_pb2.AgentResult(version=str(self.n))


class _Handle:
    def __init__(self) -> None:
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()


class _Watching(Check[Args, _Res]):
    id = "watching"
    version = 1
    platforms = ("linux", "darwin", "win32")
    report_field = "agent"

    def __init__(self) -> None:
        self.started: list[tuple[Context, _Handle]] = []
        self.fail = False

    def collect(self, args: Args, ctx: Context) -> Iterator[_Res]:
        assert ctx.emit is not None
        ctx.emit(_Res(1))  # reported before the run's own result
        yield _Res(2)

    def start(self, args: Args, ctx: Context) -> _Handle:
        if self.fail:
            raise CheckError("no inotify here")
        handle = _Handle()
        self.started.append((ctx, handle))
        assert ctx.emit is not None
        ctx.emit(_Res(99))
        return handle


def test_tasks_start_stop_and_restart_continuous_work(tmp_path: Path) -> None:
    check = _Watching()
    delivered: list[report_pb2.Report] = []
    w = Watchers({"watching": check, "agent": Fim()}, delivered.append, tmp_path)
    w.apply([_task("t1", "watching", {"x": 1})])
    [(ctx, first)] = check.started
    assert ctx.state_dir == check_state_dir(tmp_path, "watching", "t1")
    [rep] = delivered
    assert (rep.check_id, rep.task_id, rep.agent.version, rep.status.kind) == ("watching", "t1", "99", 1)
    w.apply([_task("t1", "watching", {"x": 1})])  # unchanged: keeps running
    assert len(check.started) == 1 and not first.stopped.is_set()
    w.apply([_task("t1", "watching", {"x": 2})])  # params changed: restarted
    assert first.stopped.is_set() and len(check.started) == 2
    w.apply([])
    assert check.started[1][1].stopped.is_set() and w.running == {}


def test_a_check_that_cannot_start_reports_why(tmp_path: Path) -> None:
    check = _Watching()
    check.fail = True
    delivered: list[report_pb2.Report] = []
    Watchers({"watching": check}, delivered.append, tmp_path).apply([_task("t1", "watching")])
    [rep] = delivered
    assert rep.status.kind == 2 and "no inotify here" in rep.status.message  # ERROR


def test_checks_without_continuous_work_are_not_started(tmp_path: Path) -> None:
    from checks.ports import Ports

    w = Watchers({"ports": Ports()}, lambda r: None, tmp_path)
    w.apply([_task("t1", "ports")])
    assert w.running == {}


def test_runner_gives_state_dir_and_delivers_emitted_results_first(tmp_path: Path) -> None:
    delivered: list[report_pb2.Report] = []
    report = run_check(_Watching(), {}, "t9", state_dir=tmp_path / "s", emit=delivered.append)
    assert [r.agent.version for r in delivered] == ["1"] and report.agent.version == "2"
    assert delivered[0].task_id == "t9" and delivered[0].check_id == "watching"


def test_scheduler_runs_fim_with_a_state_dir_per_task(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.php").write_text("<?php ?>\n")
    delivered: list[report_pb2.Report] = []
    sched = Scheduler({"fim": Fim()}, delivered.append, state_root=tmp_path / "data")
    sched._run(_task("fim-1", "fim", {"paths": [str(root)]}))
    [rep] = delivered
    assert rep.status.kind == 1 and rep.fim.baseline_created and rep.fim.files_watched == 2
    assert (tmp_path / "data" / "fim" / "fim-1" / "state.db").exists()


def test_a_long_run_does_not_hold_up_other_tasks(tmp_path: Path) -> None:
    release = threading.Event()

    class _Slow(_Watching):
        id = "slow"

        def collect(self, args: Args, ctx: Context) -> Iterator[_Res]:
            release.wait(30)
            yield _Res(0)

    delivered: list[report_pb2.Report] = []
    got = threading.Event()

    def deliver(r: report_pb2.Report) -> None:
        delivered.append(r)
        if r.check_id == "watching" and r.agent.version == "2":
            got.set()

    sched = Scheduler({"slow": _Slow(), "watching": _Watching()}, deliver)
    policy = pb.Policy(policy_id="p", tasks=[_task("s", "slow", interval_s=1), _task("w", "watching", interval_s=1)])
    sched.apply_policy(policy)
    loop = threading.Thread(target=sched.loop, daemon=True)
    loop.start()
    try:
        assert got.wait(10), "the quick task waited for the slow one"
    finally:
        release.set()
        sched.stop()
        loop.join(5)


def test_stale_state_dirs_are_pruned_after_a_while(tmp_path: Path) -> None:
    keep = check_state_dir(tmp_path, "fim", "keep")
    old = check_state_dir(tmp_path, "fim", "old")
    recent = check_state_dir(tmp_path, "fim", "recent")
    for d in (keep, old, recent):
        d.mkdir(parents=True)
    os.utime(old, (time.time() - 8 * 86400,) * 2)
    os.utime(keep, (time.time() - 8 * 86400,) * 2)
    removed = prune_state_dirs(tmp_path, ["fim"], [keep])
    assert removed == [old] and keep.exists() and recent.exists()
    # A task id from the controller never names a path outside the data directory.
    assert check_state_dir(tmp_path, "fim", "../../etc").parent == tmp_path / "fim"


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "agent.json").write_text(json.dumps({"agent_id": "a-1", "controller": "127.0.0.1:1", "enrolled_at": ""}))
    a = Agent(data)
    try:
        yield a
    finally:
        a.close()


def _fim_reports(a: Agent) -> list[report_pb2.Report]:
    return [msg.report for _, payload in a.spool.pending(limit=10_000)
            if (msg := pb.AgentMessage.FromString(payload)).report.check_id == "fim"]


def _wait(what: str, fn: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.01)  # polling the spool, which has no change notification per report
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses inotify")
def test_agent_spools_a_realtime_fim_report_quickly(agent: Agent, tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.php").write_text("<?php echo 'home'; ?>\n")
    policy = pb.Policy(policy_id="p1", tasks=[_task("fim-web", "fim", {"paths": [str(root)]})])
    agent.on_policy(policy)
    _wait("the startup report", lambda: any(r.fim.scan_kind == "startup" for r in _fim_reports(agent)))
    t0 = time.monotonic()
    (root / "shell.php").write_text("<?php system($_GET['c']); ?>\n")
    reports = _wait("the real-time report", lambda: [r for r in _fim_reports(agent) if r.fim.scan_kind == "realtime"])
    latency = time.monotonic() - t0
    [rep] = reports
    [ev] = rep.fim.events
    assert ev.path == str(root / "shell.php") and ev.kind == 1 and ev.detected_by == 1  # CREATED, REALTIME
    assert rep.task_id == "fim-web" and rep.check_version == 1 and rep.sequence > 0
    assert latency < 1.0, f"{latency:.3f}s from write to spool"
    assert FimResult.from_proto(rep.fim).events[0].diff.endswith("+<?php system($_GET['c']); ?>\n")
    # The task leaves the policy: watching stops.
    agent.on_policy(pb.Policy(policy_id="p2"))
    assert agent.watchers.running == {}
