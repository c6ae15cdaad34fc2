"""Runs the policy's tasks on their intervals, and at once when the controller asks.

Each run gets a thread of its own, so a long run (a file-integrity verification re-hashing a big
deployment) never holds up the others; a task still running when it is due again is skipped once
rather than run twice at the same time.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.runner import run_check, task_params
from agent.state import check_state_dir
from checks.base import Check, Undelivered
from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import report_pb2

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        checks: Mapping[str, Check[Any, Any]],
        deliver: Callable[[report_pb2.Report], None],
        spool_stats: Callable[[], Mapping[str, int | str]] | None = None,
        timeout_s: float = 120.0,
        state_root: Path | None = None,
        recovery: Callable[[str, str, bool], None] | None = None,
    ) -> None:
        self.checks = checks
        # (task id, check id, still dirty): a check that collects dropped results again itself says so.
        self.recovery = recovery
        self.deliver = deliver
        self.spool_stats = spool_stats
        self.timeout_s = timeout_s
        # Where each task's private state directory lives (the agent's data directory); None: no state.
        self.state_root = state_root
        self._running: set[str] = set()
        self._tasks: dict[str, pb.Task] = {}
        self._due: list[tuple[float, str]] = []
        self._next: dict[str, float] = {}
        self._cv = threading.Condition()
        self._stop = False
        self.policy_id = ""
        self.runs = 0

    def apply_policy(self, policy: pb.Policy) -> None:
        """Swap in a new policy without a restart; unchanged tasks keep their schedule, new ones run now.

        Except a task whose check also works continuously (``Check.start``, e.g. fim): starting it
        already scans, so its first scheduled run comes one interval later instead of racing that scan.
        """
        with self._cv:
            now = time.monotonic()
            new = {t.task_id: t for t in policy.tasks}
            self._next = {tid: self._next.get(tid, now + self._first_delay(t)) for tid, t in new.items()}
            self._tasks = new
            self._rebuild()
            self.policy_id = policy.policy_id
            self._cv.notify_all()
        log.info("policy %s applied: %d tasks (%s)", policy.policy_id, len(new),
                 ", ".join(sorted({t.check_id for t in new.values()})) or "none")

    def _first_delay(self, task: pb.Task) -> float:
        check = self.checks.get(task.check_id)
        starts = check is not None and type(check).start is not Check.start
        return float(max(task.interval_s, 1)) if starts else 0.0

    def tasks(self) -> list[pb.Task]:
        """The tasks of the policy in force."""
        with self._cv:
            return list(self._tasks.values())

    def run_now(self, check_ids: list[str]) -> None:
        with self._cv:
            now = time.monotonic()
            for tid, task in self._tasks.items():
                if not check_ids or task.check_id in check_ids:
                    self._next[tid] = now
            self._rebuild()
            self._cv.notify_all()

    def run_tasks(self, task_ids: list[str]) -> list[str]:
        """Run these tasks of the policy now; returns those that are not in the policy (nothing to run)."""
        with self._cv:
            now = time.monotonic()
            missing = [tid for tid in task_ids if tid not in self._tasks]
            for tid in task_ids:
                if tid in self._tasks:
                    self._next[tid] = now
            self._rebuild()
            self._cv.notify_all()
        return missing

    def _rebuild(self) -> None:
        self._due = [(t, tid) for tid, t in self._next.items()]
        heapq.heapify(self._due)

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    def loop(self) -> None:
        while True:
            with self._cv:
                while not self._stop:
                    now = time.monotonic()
                    if self._due and self._due[0][0] <= now:
                        _, tid = heapq.heappop(self._due)
                        found = self._tasks.get(tid)
                        if found is None or self._next.get(tid, 0) > now:
                            continue
                        task = found
                        self._next[tid] = now + max(task.interval_s, 1)
                        heapq.heappush(self._due, (self._next[tid], tid))
                        break
                    wait = (self._due[0][0] - now) if self._due else None
                    self._cv.wait(wait)
                if self._stop:
                    return
                if task.task_id in self._running:
                    log.info("task %s (%s) is still running; this turn is skipped", task.task_id, task.check_id)
                    continue
                self._running.add(task.task_id)
            threading.Thread(target=self._run_and_release, args=(task,), name=f"run-{task.check_id}",
                             daemon=True).start()

    def _run_and_release(self, task: pb.Task) -> None:
        try:
            self._run(task)
        except Exception:
            log.exception("running task %s (%s) failed", task.task_id, task.check_id)
        finally:
            with self._cv:
                self._running.discard(task.task_id)

    def _run(self, task: pb.Task) -> bool:
        """Run ``task`` and queue its report; False when the report could not be queued (spool full:
        the drop is counted and the task is dirty until a later result of it is queued)."""
        check = self.checks.get(task.check_id)
        if check is None:
            log.warning("policy asks for unknown check %r; skipped", task.check_id)
            return True
        state_dir = check_state_dir(self.state_root, check.id, task.task_id) if self.state_root else None
        hook = self.recovery
        recovery = (lambda dirty: hook(task.task_id, task.check_id, dirty)) if hook is not None else None
        report = run_check(check, task_params(task), task.task_id, self.timeout_s, self.spool_stats,
                           state_dir=state_dir, emit=self.deliver, recovery=recovery, data_dir=self.state_root)
        with self._cv:
            self.runs += 1
        try:
            self.deliver(report)
        except Undelivered:
            return False
        return True
