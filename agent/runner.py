"""Runs one check under a time limit and turns whatever happens into a Report.

A check that raises, hangs or does not run on this platform becomes a status with a typed kind; it
never takes the agent down.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from checks.base import Check, CheckError, Context
from proto.vigil.v1 import common_pb2, report_pb2

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 120.0


def run_check(
    check: Check[Any, Any],
    params: Mapping[str, Any],
    task_id: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    spool_stats: Callable[[], Mapping[str, int]] | None = None,
) -> report_pb2.Report:
    """Run ``check`` and return an unsequenced Report (the spool assigns the sequence)."""
    report = report_pb2.Report(check_id=check.id, check_version=check.version, task_id=task_id)
    report.collected_at.FromDatetime(dt.datetime.now(dt.UTC))
    started = time.perf_counter()
    kind, message = common_pb2.CheckStatus.OK, ""
    ctx = Context(spool_stats=spool_stats)
    if not check.runs_here(ctx.platform):
        kind, message = common_pb2.CheckStatus.UNSUPPORTED, f"check {check.id} does not run on {ctx.platform}"
    else:
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                args = check.args_type.from_params(params)
                box["results"] = list(check.collect(args, ctx))
            except BaseException as exc:  # a check must never take the agent down
                box["error"] = exc

        worker = threading.Thread(target=target, name=f"check-{check.id}", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            kind, message = common_pb2.CheckStatus.TIMEOUT, f"check {check.id} did not finish in {timeout_s:.0f}s"
        elif "error" in box:
            exc = box["error"]
            if isinstance(exc, CheckError):
                kind = common_pb2.CheckStatus.Kind.Value(exc.kind)
                message = str(exc)
            else:
                kind, message = common_pb2.CheckStatus.ERROR, f"{type(exc).__name__}: {exc}"
                log.warning("check %s failed: %s", check.id, message, exc_info=exc)
        else:
            results = box.get("results", [])
            if results:
                getattr(report, check.report_field).CopyFrom(results[0].to_proto())
            if ctx.warnings:
                kind, message = common_pb2.CheckStatus.PARTIAL, "; ".join(ctx.warnings)
    report.status.kind = kind
    report.status.message = message[:2000]
    report.status.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return report
