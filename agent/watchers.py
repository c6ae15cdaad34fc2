"""Continuous work of checks between their scheduled runs (``Check.start``: fim's real-time watching).

When a policy task appears whose check has continuous work, the check is started with a context whose
``emit`` turns each result into a Report of that task and hands it to the agent's spool at once. When
the task leaves the policy, or its parameters change, what was started is stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from agent.runner import Deliver, error_report, result_report, task_params
from agent.state import check_state_dir, prune_state_dirs, touch_state_dir
from checks.base import Check, Context, Result, Stoppable, Undelivered
from proto.vigil.v1 import agent_service_pb2 as pb

log = logging.getLogger(__name__)


def has_continuous_work(check: Check[Any, Any]) -> bool:
    return type(check).start is not Check.start


class Watchers:
    def __init__(
        self,
        checks: Mapping[str, Check[Any, Any]],
        deliver: Deliver,
        state_root: Path | None,
        spool_stats: Callable[[], Mapping[str, int | str]] | None = None,
        stateful: Iterable[str] | None = None,
        recovery: Callable[[str, str, bool], None] | None = None,
    ) -> None:
        self.checks = checks
        # (task id, check id, still dirty): see Context.recovery.
        self.recovery = recovery
        # The checks whose task state folders are pruned when their tasks leave the policy.
        self.stateful = set(stateful) if stateful is not None else {
            c.id for c in checks.values() if has_continuous_work(c)}
        self.deliver = deliver
        self.state_root = state_root
        self.spool_stats = spool_stats
        self._lock = threading.Lock()
        # task id -> (fingerprint of check and params, what start() returned)
        self._running: dict[str, tuple[str, Stoppable]] = {}

    @property
    def running(self) -> dict[str, Stoppable]:
        with self._lock:
            return {tid: handle for tid, (_, handle) in self._running.items()}

    def apply(self, tasks: Iterable[pb.Task]) -> None:
        """Start what the tasks want and is not running; stop what runs and is no longer wanted."""
        with self._lock:
            wanted: dict[str, tuple[pb.Task, Check[Any, Any], dict[str, Any], str]] = {}
            for task in tasks:
                check = self.checks.get(task.check_id)
                if check is None or not has_continuous_work(check) or not check.runs_here():
                    continue
                params = task_params(task)
                fingerprint = json.dumps([task.check_id, params], sort_keys=True, default=str)
                wanted[task.task_id] = (task, check, params, fingerprint)
            for tid in list(self._running):
                if tid not in wanted or wanted[tid][3] != self._running[tid][0]:
                    self._stop(tid)
            for tid, (task, check, params, fingerprint) in wanted.items():
                if tid not in self._running:
                    self._start(task, check, params, fingerprint)
            self._prune(wanted)

    def _start(self, task: pb.Task, check: Check[Any, Any], params: dict[str, Any], fingerprint: str) -> None:
        state_dir = check_state_dir(self.state_root, check.id, task.task_id) if self.state_root else None

        def emit(result: Result) -> None:  # raises Undelivered when the spool is full: the check handles it
            self.deliver(result_report(check, task.task_id, result))

        hook = self.recovery
        recovery = (lambda dirty: hook(task.task_id, check.id, dirty)) if hook is not None else None
        ctx = Context(spool_stats=self.spool_stats, state_dir=state_dir, emit=emit, recovery=recovery)
        try:
            handle = check.start(check.args_type.from_params(params), ctx)
        except Exception as exc:  # a check must never take the agent down; the controller hears of it
            log.warning("cannot start %s for task %s: %s", check.id, task.task_id, exc)
            with contextlib.suppress(Undelivered):  # counted and marked dirty by the spool
                self.deliver(error_report(check, task.task_id, exc, "cannot start watching"))
            return
        if handle is not None:
            log.info("started %s for task %s", check.id, task.task_id)
            self._running[task.task_id] = (fingerprint, handle)

    def _stop(self, tid: str) -> None:
        _, handle = self._running.pop(tid)
        try:
            handle.stop()
        except Exception:
            log.exception("stopping the continuous work of task %s failed", tid)

    def _prune(self, wanted: Mapping[str, tuple[pb.Task, Check[Any, Any], dict[str, Any], str]]) -> None:
        if self.state_root is None:
            return
        keep = [check_state_dir(self.state_root, c.id, t.task_id) for t, c, _, _ in wanted.values()]
        for path in keep:
            touch_state_dir(path)
        for removed in prune_state_dirs(self.state_root, self.stateful, keep):
            log.info("removed the state of a task that left the policy: %s", removed)

    def stop_all(self) -> None:
        with self._lock:
            for tid in list(self._running):
                self._stop(tid)
