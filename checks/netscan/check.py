"""Scan each target a rule names, inside the rule's ranges, and report its reachable TCP ports.

Example ``params``::

    ranges: [10.20.0.0/24]
    targets: [{name: fw-hq, address: 10.20.0.1}, {name: cam-lobby, address: 10.20.0.40}]
    ports: "1-1024,8080,8443"
    method: auto            # syn with CAP_NET_RAW, else connect; or connect / syn
    timeout_s: 1.0

One result per target goes out through ``Context.emit``; the run's own last result names no target.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from checks.base import (
    Args,
    Check,
    Context,
    ParamsError,
    Result,
    Undelivered,
    named_addresses,
    networks_param,
)
from common.portlist import PortListError, parse_ports
from proto.vigil.v1 import netscan_pb2

MAX_PORTS = 65535
_METHODS = ("auto", "connect", "syn")


class NetscanArgsError(ParamsError):
    pass


@dataclass(frozen=True)
class Target:
    name: str
    address: str
    agent: str = ""  # the agent running on the target, when one does (id or hostname)


@dataclass(frozen=True)
class NetscanArgs(Args):
    ranges: tuple[str, ...]
    targets: tuple[Target, ...]
    ports: str = "1-1024"
    method: str = "auto"
    timeout_s: float = 1.0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> NetscanArgs:
        nets = networks_param(params, "netscan", error=NetscanArgsError)
        ranges = params["ranges"]
        targets = []
        for where, t, address in named_addresses(params, "targets", "netscan", nets, NetscanArgsError):
            agent = t.get("agent", "")
            if not isinstance(agent, str):
                raise NetscanArgsError(f"{where}: agent must be an agent id or hostname")
            targets.append(Target(t["name"], address, agent))
        ports = params.get("ports", "1-1024")
        method = params.get("method", "auto")
        timeout = params.get("timeout_s", 1.0)
        if not isinstance(ports, str):
            raise NetscanArgsError('netscan params: ports must be text such as "1-1024,8080"')
        try:
            parse_ports(ports)
        except PortListError as exc:
            raise NetscanArgsError(f"netscan params: {exc}") from None
        if method not in _METHODS:
            raise NetscanArgsError(f"netscan params: method must be one of {', '.join(_METHODS)}")
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0.05 <= timeout <= 30:
            raise NetscanArgsError("netscan params: timeout_s must be 0.05 to 30 seconds")
        return cls(tuple(ranges), tuple(targets), ports, method, float(timeout))


@dataclass(frozen=True)
class NetscanResult(Result):
    """One target's reachable ports.  Example: NetscanResult(target="fw-hq", address="10.20.0.1",
    method="connect", open=((22, "SSH-2.0-OpenSSH_9.2"), (443, "")), closed=1018, filtered=2, scanned=1022)"""

    target: str
    address: str
    method: str = ""
    open: tuple[tuple[int, str], ...] = ()
    closed: int = 0
    filtered: int = 0
    scanned: int = 0
    error: str = ""
    elapsed_s: float = 0.0
    agent: str = ""

    def to_proto(self) -> netscan_pb2.NetscanResult:
        return netscan_pb2.NetscanResult(
            target=self.target, address=self.address, method=self.method,
            open=[netscan_pb2.NetscanPort(port=p, banner=b[:256]) for p, b in self.open], closed=self.closed,
            filtered=self.filtered, scanned=self.scanned, error=self.error[:2000], elapsed_s=round(self.elapsed_s, 3),
            agent=self.agent)


class Netscan(Check[NetscanArgs, NetscanResult]):
    """Reachable TCP ports of each target.  Example result: see :class:`NetscanResult`."""

    id = "netscan"
    version = 1
    platforms = ("linux",)
    args_type = NetscanArgs
    report_field = "netscan"
    default_interval_s = 3600
    timeout_s = 1800.0

    def collect(self, args: NetscanArgs, ctx: Context) -> Iterator[NetscanResult]:
        from agent.sensor import SensorError
        from agent.sensor.scan import ScanOptions, Scope, chosen_method, scan_ports

        scope = Scope(args.ranges)
        ports = parse_ports(args.ports)
        options = ScanOptions(timeout_s=args.timeout_s)
        for t in args.targets:
            start = time.monotonic()
            try:
                method = chosen_method(scope, t.address, args.method)  # type: ignore[arg-type]
                states = scan_ports(scope, t.address, ports, options, method)
            except SensorError as exc:
                result = NetscanResult(t.name, t.address, error=str(exc), elapsed_s=time.monotonic() - start,
                                       agent=t.agent)
            else:
                result = NetscanResult(
                    t.name, t.address, method, tuple((s.port, s.banner or "") for s in states if s.state == "open"),
                    sum(1 for s in states if s.state == "closed"), sum(1 for s in states if s.state == "filtered"),
                    len(states), elapsed_s=time.monotonic() - start, agent=t.agent)
            if ctx.emit is None:
                yield result
                continue
            try:
                ctx.emit(result)
            except Undelivered:
                continue  # counted by the spool; the task runs again
        yield NetscanResult("", "")
