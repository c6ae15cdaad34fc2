"""Runs one check under a time limit and turns whatever happens into a Report.

A check that raises, hangs or does not run on this platform becomes a status with a typed kind; it
never takes the agent down. A check may also report results on its own (``Context.emit``: a large
result split in several, a real-time change); those become Reports of the same task at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2

from checks.base import Check, CheckError, Context, Result, Undelivered
from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import common_pb2, report_pb2

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 120.0
# Queues a Report durably; raises checks.base.Undelivered when the spool is full (the drop is counted).
Deliver = Callable[[report_pb2.Report], None]


def whole_numbers(value: Any) -> Any:
    """Give back the integers a baseline wrote: protobuf's Struct carries every number as a double."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    return value


def plain(value: struct_pb2.Value) -> Any:
    """One protobuf Struct value as a plain Python value, numbers that are whole as ``int``.

    (json_format.MessageToDict does the same but loads ~0.4 MB of code an idle agent does not need.)
    """
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {k: plain(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [plain(v) for v in value.list_value.values]
    if kind == "null_value" or kind is None:
        return None
    return whole_numbers(getattr(value, kind))


def task_params(task: pb.Task) -> dict[str, Any]:
    """A policy task's ``params`` as plain Python values."""
    return {k: plain(v) for k, v in task.params.fields.items()} if task.HasField("params") else {}


def new_report(check: Check[Any, Any], task_id: str) -> report_pb2.Report:
    report = report_pb2.Report(check_id=check.id, check_version=check.version, task_id=task_id)
    report.collected_at.FromDatetime(dt.datetime.now(dt.UTC))
    return report


def result_report(check: Check[Any, Any], task_id: str, result: Result) -> report_pb2.Report:
    """A Report for a result a check emitted outside a run (status OK: it was collected)."""
    report = new_report(check, task_id)
    getattr(report, check.report_field).CopyFrom(result.to_proto())
    report.status.kind = common_pb2.CheckStatus.OK
    return report


def error_report(check: Check[Any, Any], task_id: str, exc: BaseException, what: str = "") -> report_pb2.Report:
    """A Report saying that ``check`` failed with ``exc`` (typed kind for a CheckError)."""
    report = new_report(check, task_id)
    if isinstance(exc, CheckError):
        report.status.kind = common_pb2.CheckStatus.Kind.Value(exc.kind)
        message = str(exc)
    else:
        report.status.kind = common_pb2.CheckStatus.ERROR
        message = f"{type(exc).__name__}: {exc}"
    report.status.message = (f"{what}: {message}" if what else message)[:2000]
    return report


def run_check(
    check: Check[Any, Any],
    params: Mapping[str, Any],
    task_id: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    spool_stats: Callable[[], Mapping[str, int | str]] | None = None,
    *,
    state_dir: Path | None = None,
    emit: Deliver | None = None,
    recovery: Callable[[bool], None] | None = None,
    data_dir: Path | None = None,
) -> report_pb2.Report:
    """Run ``check`` and return an unsequenced Report (the spool assigns the sequence).

    ``state_dir`` is the task's private state directory; ``emit`` delivers the Reports of results the
    check reports before its last one (through ``Context.emit`` or by yielding several); ``recovery``
    becomes ``Context.recovery``.
    """
    report = new_report(check, task_id)
    started = time.perf_counter()
    kind, message = common_pb2.CheckStatus.OK, ""
    emit_result = (lambda result: emit(result_report(check, task_id, result))) if emit is not None else None
    ctx = Context(spool_stats=spool_stats, state_dir=state_dir, emit=emit_result, recovery=recovery,
                  data_dir=data_dir)
    # A check that knows it needs longer (a file-integrity verification) gets that long.
    limit = max(timeout_s, check.timeout_s or 0.0)
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
        worker.join(limit)
        if worker.is_alive():
            kind, message = common_pb2.CheckStatus.TIMEOUT, f"check {check.id} did not finish in {limit:.0f}s"
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
                *earlier, last = results
                for result in earlier:
                    if emit_result is not None:
                        # A drop is counted and its task marked dirty by the spool: it runs again.
                        with contextlib.suppress(Undelivered):
                            emit_result(result)
                    else:
                        log.warning("check %s yielded %d results; only the last is reported", check.id, len(results))
                getattr(report, check.report_field).CopyFrom(last.to_proto())
            if ctx.warnings:
                kind, message = common_pb2.CheckStatus.PARTIAL, "; ".join(ctx.warnings)
    report.status.kind = kind
    report.status.message = message[:2000]
    report.status.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return report
