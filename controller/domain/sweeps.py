"""Sweeps: "run these checks on these agents now", sent to the connected agents and remembered.

A sweep is held in memory by the process that sent it (its results arrive as ordinary reports and
are stored like any other); the audit log keeps who asked for which sweep. The agent channel is not a
dependency of this module: the composition root gives :class:`Sweeps` a :data:`Dispatch` that sends
the command and returns the agents that got it.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from common.errors import UsageError
from controller.domain import audit
from controller.errors import NotFound, Unavailable

# Sends ``check_ids`` to ``agent_ids`` (None: every connected agent); returns the agents that got it.
Dispatch = Callable[[Sequence[str] | None, Sequence[str]], list[str]]

MAX_ENTRIES = 1000
# Sweeps remembered per process; the oldest are forgotten first (the audit log keeps them all).
MAX_REMEMBERED = 10000


@dataclass(frozen=True)
class Sweep:
    id: str
    requested_by: str
    requested_at: dt.datetime
    checks: tuple[str, ...]
    agents: tuple[str, ...]
    status: str = "sent"


@dataclass
class Sweeps:
    dispatch: Dispatch | None = None
    _sent: dict[str, Sweep] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, sessions: sessionmaker[Session], actor: str, checks: Sequence[str],
            agents: Sequence[str] | None = None, now: dt.datetime | None = None) -> Sweep:
        """Send the sweep to the connected agents (all of them, or ``agents``) and audit it."""
        if self.dispatch is None:
            raise Unavailable("the agent channel is not running")
        for name, values in (("checks", checks), ("agents", agents or ())):
            if len(values) > MAX_ENTRIES:
                raise UsageError(f"{name}: at most {MAX_ENTRIES} entries")
            if any(not v.strip() for v in values):
                raise UsageError(f"{name}: entries must not be empty")
        sent = self.dispatch(None if agents is None else list(agents), list(checks))
        sweep = Sweep(id=uuid.uuid4().hex[:12], requested_by=actor, requested_at=now or dt.datetime.now(dt.UTC),
                      checks=tuple(checks), agents=tuple(sent))
        with sessions.begin() as s:
            audit.record(s, actor, "sweep.run", "sweep", sweep.id, {"agents": sent, "checks": list(checks)})
        with self._lock:
            self._sent[sweep.id] = sweep
            while len(self._sent) > MAX_REMEMBERED:
                del self._sent[next(iter(self._sent))]
        return sweep

    def get(self, sweep_id: str) -> Sweep:
        with self._lock:
            sweep = self._sent.get(sweep_id)
        if sweep is None:
            raise NotFound(f"no sweep {sweep_id!r}")
        return sweep
