"""Runs the policy's tasks on their intervals, and at once when the controller asks."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.json_format import MessageToDict

from agent.runner import run_check
from checks.base import Check
from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import report_pb2

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        checks: Mapping[str, Check[Any, Any]],
        deliver: Callable[[report_pb2.Report], None],
        spool_stats: Callable[[], Mapping[str, int]] | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        self.checks = checks
        self.deliver = deliver
        self.spool_stats = spool_stats
        self.timeout_s = timeout_s
        self._tasks: dict[str, pb.Task] = {}
        self._due: list[tuple[float, str]] = []
        self._next: dict[str, float] = {}
        self._cv = threading.Condition()
        self._stop = False
        self.policy_id = ""
        self.runs = 0

    def apply_policy(self, policy: pb.Policy) -> None:
        """Swap in a new policy without a restart; unchanged tasks keep their schedule, new ones run now."""
        with self._cv:
            now = time.monotonic()
            new = {t.task_id: t for t in policy.tasks}
            self._next = {tid: self._next.get(tid, now) for tid in new}
            self._tasks = new
            self._rebuild()
            self.policy_id = policy.policy_id
            self._cv.notify_all()
        log.info("policy %s applied: %d tasks (%s)", policy.policy_id, len(new),
                 ", ".join(sorted({t.check_id for t in new.values()})) or "none")

    def run_now(self, check_ids: list[str]) -> None:
        with self._cv:
            now = time.monotonic()
            for tid, task in self._tasks.items():
                if not check_ids or task.check_id in check_ids:
                    self._next[tid] = now
            self._rebuild()
            self._cv.notify_all()

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
            self._run(task)

    def _run(self, task: pb.Task) -> None:
        check = self.checks.get(task.check_id)
        if check is None:
            log.warning("policy asks for unknown check %r; skipped", task.check_id)
            return
        params = _whole_numbers(MessageToDict(task.params)) if task.HasField("params") else {}
        report = run_check(check, params, task.task_id, self.timeout_s, self.spool_stats)
        self.runs += 1
        self.deliver(report)


def _whole_numbers(value: Any) -> Any:
    """Give back the integers a baseline wrote: protobuf's Struct carries every number as a double."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value
