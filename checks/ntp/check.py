"""The ``ntp`` check itself: its arguments, and ``collect()`` tying the daemon's view to SNTP."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import psutil

from checks.base import Args, Check, CheckError, Context
from checks.ntp import linux, windows
from checks.ntp.parse import Daemon, NtpResult, build_result
from checks.ntp.sntp import SntpMeasurement, measure, split_server

_MAX_SAMPLES = 8
_MAX_TIMEOUT_S = 10.0


class NtpArgsError(CheckError, ValueError):
    """The rule's ``params`` for the ntp check are wrong; the message names the field."""


@dataclass
class NtpArgs(Args):
    """``servers``: reference servers as "host" or "host:port" ("[v6]:port"); none means no SNTP.
    ``timeout_s``: per request; ``samples``: requests per server, the one with the least delay counts.
    """

    servers: list[str] = field(default_factory=list)
    timeout_s: float = 2.0
    samples: int = 3

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> NtpArgs:
        # Unknown keys are ignored so that a newer controller can push parameters of a later
        # version without breaking the check on older agents.
        servers = params.get("servers", [])
        if not isinstance(servers, list) or not all(isinstance(s, str) and s.strip() for s in servers):
            raise NtpArgsError(f'ntp params: servers must be a list of "host" or "host:port" strings, got {servers!r}')
        for server in servers:
            try:
                split_server(server)
            except ValueError:
                raise NtpArgsError(
                    f"ntp params: servers: {server!r} needs a port from 1 to 65535 after the colon"
                ) from None
        timeout = params.get("timeout_s", 2.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= _MAX_TIMEOUT_S:
            raise NtpArgsError(f"ntp params: timeout_s must be a number of seconds in (0, {_MAX_TIMEOUT_S:g}]")
        samples = params.get("samples", 3)
        if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= _MAX_SAMPLES:
            raise NtpArgsError(f"ntp params: samples must be a whole number from 1 to {_MAX_SAMPLES}")
        return cls(servers=[s.strip() for s in servers], timeout_s=float(timeout), samples=samples)


def measure_all(args: NtpArgs) -> list[SntpMeasurement]:
    """Measure every reference server at once, so a dead one costs one timeout, not one per server."""
    if not args.servers:
        return []

    def one(server: str) -> SntpMeasurement:
        host, port = split_server(server)
        return measure(host, port, args.timeout_s, args.samples)

    with ThreadPoolExecutor(max_workers=len(args.servers), thread_name_prefix="ntp-sntp") as pool:
        return list(pool.map(one, args.servers))


def _darwin_daemon(warnings: list[str]) -> Daemon:
    running = "timed" in {p.info.get("name") for p in psutil.process_iter(["name"])}
    if running:
        warnings.append("timed's state cannot be read on macOS: judge the clock by its SNTP offset")
    return Daemon(name="timed" if running else "", running=running)


class Ntp(Check[NtpArgs, NtpResult]):
    """Clock synchronisation: which daemon keeps the time and what it claims, checked by direct SNTP.

    Example result (a host whose chronyd follows a server 5 s ahead without being able to fix it)::

        NtpResult(daemon="chronyd", daemon_running=True, synchronized=True,
                  offset_ms=5000.4, offset_source="sntp", daemon_offset_ms=5000.035,
                  stratum=3, reference="10.201.1.3", last_sync=datetime(2026, 11, 21, 5, 31, 11, tzinfo=UTC),
                  seconds_since_sync=4.2, root_delay_ms=4.03, root_dispersion_ms=2.12,
                  sources=[NtpSource(address="10.201.1.3", stratum=2, offset_ms=-0.0003, delay_ms=0.0,
                                     selected=True, state="selected")],
                  sntp=[SntpMeasurement(server="10.201.1.3", ok=True, offset_ms=5000.4, delay_ms=0.3,
                                        stratum=2, leap=0, reference_id="10.201.0.1")])

    Offsets are reference minus local: positive means the clock is behind. ``synchronized`` is the
    daemon's claim only; ``offset_ms`` prefers the SNTP median so that a daemon which is wrong or
    lies is still caught. Problems reading the daemon become ``ctx.warnings``, never a crash; a
    reference server that fails to answer properly is reported in its ``SntpMeasurement.error``.
    """

    id = "ntp"
    version = 1
    platforms = ("linux", "darwin", "win32")
    args_type: ClassVar[type[Args]] = NtpArgs
    report_field = "ntp"
    default_interval_s = 300

    def collect(self, args: NtpArgs, ctx: Context) -> Iterator[NtpResult]:
        if ctx.platform.startswith("linux"):
            daemon = linux.collect_daemon(ctx.warnings)
        elif ctx.platform.startswith("win32"):
            daemon = windows.collect_daemon(ctx.warnings)
        else:
            daemon = _darwin_daemon(ctx.warnings)
        # A failed SNTP measurement is a finding (in ``sntp[].error``) for the baseline to judge, not a
        # collection problem, so it does not become a warning (which would mark the report PARTIAL).
        yield build_result(daemon, measure_all(args), now=datetime.now(UTC))
