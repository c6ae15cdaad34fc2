"""``vigil-agent run``: wires the spool, the scheduler and the connection together."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from agent.client import Connection
from agent.scheduler import Scheduler
from agent.spool import DEFAULT_MAX_BYTES, open_spool
from agent.state import Identity, policy_path
from agent.watchers import Watchers
from checks.base import Undelivered
from checks.registry import Checks
from common.errors import ConfigError
from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import report_pb2

log = logging.getLogger(__name__)


@dataclass
class AgentConfig:
    spool_max_mb: float = DEFAULT_MAX_BYTES / 2**20
    check_timeout_s: float = 120.0

    @classmethod
    def load(cls, path: Path | None) -> AgentConfig:
        if path is None:
            return cls()
        # Imported here: an agent without a config file does not carry PyYAML (~0.9 MB resident).
        import yaml

        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read agent config: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the agent config must be a mapping")
        cfg = cls()
        for key, value in data.items():
            if key not in ("spool_max_mb", "check_timeout_s"):
                raise ConfigError(f"{path}: unknown key {key!r} (known: spool_max_mb, check_timeout_s)")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{path}: {key} must be a number, not {value!r}") from None
            if number <= 0:
                raise ConfigError(f"{path}: {key} must be greater than zero")
            setattr(cfg, key, number)
        return cfg


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (as ``MALLOC_ARENA_MAX`` would) before the agent starts its threads.

    glibc gives each new thread that allocates its own arena, up to 8 per core. The agent's threads
    (gRPC's, the scheduler, fim's watchers) mostly sleep, and each arena keeps ~100 KB of
    touched memory. The hashing that needs parallelism runs in separate processes. A value the
    operator set in ``MALLOC_ARENA_MAX`` wins. Returns whether the cap was applied.
    """
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    import ctypes  # already loaded by watchdog's inotify binding

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no arenas to cap)
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


class Agent:
    def __init__(self, data_dir: Path, config: AgentConfig | None = None) -> None:
        self.data_dir = data_dir
        self.config = config or AgentConfig()
        self.identity = Identity.load(data_dir)
        self._recovering = threading.Lock()
        self._asked: dict[str, int] = {}  # dirty task -> its drop count when it was last run again
        # Checked before use: a damaged spool is moved aside and a new incarnation begins.
        self.spool = open_spool(data_dir / "spool.db", int(self.config.spool_max_mb * 2**20))
        self.checks = Checks()  # each check's code is imported when a task first needs it
        self.scheduler = Scheduler(self.checks, self.deliver, self.spool.health, self.config.check_timeout_s,
                                   state_root=data_dir, recovery=self.spool.hold)
        # Continuous work (fim's real-time watching) starts with run() or with a policy push.
        self.watchers = Watchers(self.checks, self.deliver, data_dir, self.spool.health,
                                 stateful=self.checks.continuous, recovery=self.spool.hold)
        self.spool.on_wake = self.recover
        self.connection = Connection(
            data_dir, self.identity.controller, self.spool,
            self.checks.capabilities,
            lambda: self.scheduler.policy_id, self.on_policy, self.on_command,
        )
        saved = policy_path(data_dir)
        if saved.exists():
            policy = pb.Policy()
            try:
                policy.ParseFromString(saved.read_bytes())
                self.scheduler.apply_policy(policy)
            except Exception:  # a damaged policy file is replaced by the controller's next push
                log.warning("ignoring unreadable %s", saved)

    def deliver(self, report: report_pb2.Report) -> None:
        """Queue ``report`` in the spool; raises Undelivered when the spool is full (the drop is counted
        and the report's task is dirty: it is collected again once the spool has room)."""
        report.incarnation = self.spool.incarnation

        def build(seq: int) -> bytes:
            report.sequence = seq
            return pb.AgentMessage(report=report).SerializeToString()

        seq = self.spool.put(build, essential=report.check_id == "agent", task_id=report.task_id,
                             check_id=report.check_id)
        if seq is None:
            log.error("spool full: dropped a %s result of task %s (counted; collected again once the spool has "
                      "room)", report.check_id, report.task_id or "-")
            raise Undelivered(f"the spool {self.spool.path} is full: the {report.check_id} result was dropped")

    def recover(self) -> None:
        """Collect dropped results again once the spool has room, and report the agent's health at once
        when the last dirty task became clean (so the controller can close the gap it ticketed).

        The spool calls this (``Spool.on_wake``) when an ack freed room or a task became clean, in the
        thread that did it; it only schedules runs, so it returns at once. No thread of its own, no poll.
        """
        if not self._recovering.acquire(blocking=False):
            return  # another thread is in it; the flags it has not seen yet stay set for the next call
        try:
            spool = self.spool
            if spool.recovered.is_set():
                spool.recovered.clear()
                log.info("every dropped result was collected again: reporting the agent's health now")
                self.scheduler.run_now(["agent"])
            if spool.room.is_set():
                spool.room.clear()
                dirty = {tid: n for tid, _check, n, held in spool.dirty() if not held}
                # Each ack may free room: a task is run again once per drop, not once per ack.
                rerun = [tid for tid, n in dirty.items() if self._asked.get(tid) != n]
                self._asked = dirty
                if rerun:
                    log.info("the spool has room again: running %d task(s) whose results were dropped",
                             len(rerun))
                    gone = self.scheduler.run_tasks(rerun)
                else:
                    gone = []
            else:
                gone = []
        finally:
            self._recovering.release()
        for tid in gone:  # left the policy meanwhile: nothing will collect it again
            spool.hold(tid, "", False)

    def on_policy(self, policy: pb.Policy) -> None:
        tmp = policy_path(self.data_dir).with_suffix(".tmp")
        tmp.write_bytes(policy.SerializeToString())
        tmp.replace(policy_path(self.data_dir))
        self.scheduler.apply_policy(policy)
        self.watchers.apply(policy.tasks)

    def on_command(self, command: pb.Command) -> None:
        if command.kind == pb.Command.RUN_CHECKS:
            log.info("controller asked to run %s now", ", ".join(command.check_ids) or "all checks")
            self.scheduler.run_now(list(command.check_ids))

    def run(self) -> None:
        self.watchers.apply(self.scheduler.tasks())
        sched = threading.Thread(target=self.scheduler.loop, name="vigil-scheduler", daemon=True)
        sched.start()
        self.recover()  # tasks left dirty by the last run, when the spool has room already
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        log.info("agent %s running; controller %s", self.identity.agent_id, self.identity.controller)
        try:
            self.connection.run_forever()
        finally:
            self.close()

    def stop(self) -> None:
        self.connection.stop()
        self.scheduler.stop()

    def close(self) -> None:
        """Stop continuous work and scheduling, then close the spool they deliver into."""
        self.spool.on_wake = None
        self.watchers.stop_all()
        self.scheduler.stop()
        self.spool.close()
