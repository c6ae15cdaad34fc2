"""The ``agent`` check: the agent's own spool and memory, as the controller's agent judge reads them."""

from __future__ import annotations

import psutil

from checks.agent import AgentSelf, AgentSelfArgs
from checks.base import Context
from common import __version__


def test_reports_the_spool_the_runner_hands_it() -> None:
    ctx = Context(spool_stats=lambda: {"depth": 7, "dropped": 3, "bytes": 8192})
    (result,) = AgentSelf().collect(AgentSelfArgs.from_params({}), ctx)
    msg = result.to_proto()
    assert (msg.version, msg.spool_depth, msg.dropped_records, msg.spool_bytes) == (__version__, 7, 3, 8192)
    # Its own memory, measured: within a few MB of what psutil sees for this process now.
    assert abs(msg.rss_mb - psutil.Process().memory_info().rss / 2**20) < 16
    assert msg.uptime_s >= 0


def test_without_a_spool_it_reports_zeros_rather_than_failing() -> None:
    (result,) = AgentSelf().collect(AgentSelfArgs.from_params({}), Context())
    msg = result.to_proto()
    assert (msg.spool_depth, msg.dropped_records, msg.spool_bytes) == (0, 0, 0)


def test_reports_the_overflow_episode_the_quarantine_and_the_incarnation() -> None:
    ctx = Context(spool_stats=lambda: {"depth": 0, "dropped": 4, "bytes": 0, "dropped_total": 9,
                                       "pending_recovery": 2, "quarantined": 1,
                                       "incarnation": "0123456789abcdef0123456789abcdef"})
    (result,) = AgentSelf().collect(AgentSelfArgs.from_params({}), ctx)
    msg = result.to_proto()
    assert (msg.dropped_records, msg.dropped_total, msg.pending_recovery, msg.quarantined_records) == (4, 9, 2, 1)
    assert msg.spool_incarnation == "0123456789abcdef0123456789abcdef"
