"""The ``agent`` check: the agent's own health as the controller should see it."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import psutil

from checks.base import Args, Check, Context, Result
from common import __version__
from proto.vigil.v1 import agent_pb2

_STARTED = time.monotonic()


@dataclass
class AgentSelfArgs(Args):
    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AgentSelfArgs:
        return cls()


@dataclass
class AgentSelfResult(Result):
    version: str
    spool_depth: int
    dropped_records: int
    spool_bytes: int
    uptime_s: float
    rss_mb: float
    # Drops since the spool incarnation began; tasks whose dropped results are not collected again yet
    # (0: the overflow episode recovered); reports held in the agent's quarantine; the incarnation.
    dropped_total: int = 0
    pending_recovery: int = 0
    quarantined_records: int = 0
    spool_incarnation: str = ""

    def to_proto(self) -> agent_pb2.AgentResult:
        return agent_pb2.AgentResult(
            version=self.version,
            spool_depth=self.spool_depth,
            dropped_records=self.dropped_records,
            spool_bytes=self.spool_bytes,
            uptime_s=self.uptime_s,
            rss_mb=self.rss_mb,
            dropped_total=self.dropped_total,
            pending_recovery=self.pending_recovery,
            quarantined_records=self.quarantined_records,
            spool_incarnation=self.spool_incarnation,
        )


class AgentSelf(Check[AgentSelfArgs, AgentSelfResult]):
    """Agent version, spool depth, dropped records, uptime and memory.

    ``dropped_records`` counts the drops of the current overflow episode (it stays at the episode's count
    once recovered, until a new drop starts the next one), ``dropped_total`` every drop of this spool
    incarnation, ``pending_recovery`` the tasks whose dropped results are still to be collected again.

    Example result: AgentSelfResult(version="0.1.0", spool_depth=0, dropped_records=0, spool_bytes=8192,
    uptime_s=61.2, rss_mb=38.5, dropped_total=0, pending_recovery=0, quarantined_records=0,
    spool_incarnation="6f1c0d0e9b6a4d0f8a51f3a4e2c7b901")
    """

    id = "agent"
    version = 1
    platforms = ("linux", "darwin", "win32")
    args_type: ClassVar[type[Args]] = AgentSelfArgs
    report_field = "agent"
    default_interval_s = 60

    def collect(self, args: AgentSelfArgs, ctx: Context) -> Iterator[AgentSelfResult]:
        spool = ctx.spool_stats() if ctx.spool_stats else {}
        yield AgentSelfResult(
            version=__version__,
            spool_depth=int(spool.get("depth", 0)),
            dropped_records=int(spool.get("dropped", 0)),
            spool_bytes=int(spool.get("bytes", 0)),
            uptime_s=round(time.monotonic() - _STARTED, 1),
            rss_mb=round(psutil.Process().memory_info().rss / 2**20, 1),
            dropped_total=int(spool.get("dropped_total", 0)),
            pending_recovery=int(spool.get("pending_recovery", 0)),
            quarantined_records=int(spool.get("quarantined", 0)),
            spool_incarnation=str(spool.get("incarnation", "")),
        )
