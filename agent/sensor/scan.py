"""What is reachable on a device: an asyncio TCP connect scan, without privileges, inside the baseline's ranges.

A port is ``open`` when the handshake completes (a banner is read if the service speaks first),
``closed`` when the device answers with a reset, ``filtered`` when nothing answers within the timeout or
an ICMP unreachable comes back (nmap's meanings). The number of connections in flight is bounded, and so
is their rate, so a scan never floods a device or the sensor's own file descriptors.

:func:`sntp` asks a device's own NTP service for the time (the ``ntp`` check's SNTP client), so the
sensor can tell whether a device serves time and how far its clock is from the sensor's.

Targets are checked against the baseline's ranges before the first packet: a target outside them is
refused with :class:`OutOfScope`, naming the target and the ranges.

:func:`scan_ports` chooses between this scan and the half-open SYN scan of :mod:`agent.sensor.synscan`
(``CAP_NET_RAW``, IPv4, no banners): ``auto`` takes the SYN scan when the process may open raw sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from agent.sensor import SensorError

if TYPE_CHECKING:
    from checks.ntp.sntp import SntpMeasurement

BANNER_BYTES = 256
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ScanMethod = Literal["auto", "connect", "syn"]


class OutOfScope(SensorError, PermissionError):
    kind = "out_of_scope"


@dataclass(frozen=True)
class PortState:
    port: int
    state: str  # open | closed | filtered
    banner: str | None = None
    rtt_ms: float | None = None


@dataclass(frozen=True)
class ScanOptions:
    timeout_s: float = 1.0  # for an answer to the SYN; a dropped port costs this twice (one retry)
    banner_timeout_s: float = 0.3  # services that speak first (SSH, SMTP, FTP) do so at once
    concurrency: int = 1024  # connections in flight (at most what the open-files limit leaves room for)
    rate_per_s: float = 20000.0  # new connections per second at most


class Scope:
    """The address ranges a baseline lets the sensor reach."""

    def __init__(self, ranges: Iterable[str]) -> None:
        self.ranges: list[Network] = []
        for r in ranges:
            try:
                self.ranges.append(ipaddress.ip_network(r.strip(), strict=False))
            except ValueError as exc:
                raise SensorError(f"scan range {r!r}: not an address or network ({exc})") from None

    def check(self, target: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The target's address, if some range holds it; else OutOfScope."""
        try:
            address = ipaddress.ip_address(target)
        except ValueError:
            raise OutOfScope(f"{target!r}: not an IP address; the sensor scans addresses of its ranges only") from None
        if not any(address in net for net in self.ranges):
            shown = ", ".join(str(n) for n in self.ranges) or "none"
            raise OutOfScope(f"{address} is outside the baseline's scan ranges ({shown}): refused, nothing was sent")
        return address


def parse_ports(spec: str) -> list[int]:
    """``"22,80,8000-8010"`` -> sorted unique ports; a clear error naming the bad part."""
    from common.portlist import PortListError
    from common.portlist import parse_ports as parse

    try:
        return parse(spec)
    except PortListError as exc:
        raise SensorError(str(exc)) from None


def scan(scope: Scope, target: str, ports: Sequence[int], options: ScanOptions = ScanOptions()) -> list[PortState]:
    """Connect-scan ``ports`` of ``target`` (which ``scope`` must hold); one state per port, in port order."""
    address = scope.check(target)
    return asyncio.run(_scan(str(address), ports, options))


def scan_ports(scope: Scope, target: str, ports: Sequence[int], options: ScanOptions = ScanOptions(),
               method: ScanMethod = "auto") -> list[PortState]:
    """Scan ``ports`` of ``target`` (which ``scope`` must hold) by ``method``; one state per port, in order.

    ``connect``: :func:`scan`, which needs no privilege and reads banners. ``syn``: the half-open
    :func:`agent.sensor.synscan.syn_scan`, which needs ``CAP_NET_RAW``, is IPv4 only and reads no banners
    (``banner`` is None); without the privilege it is a :class:`SensorError`. ``auto``: the SYN scan
    when this process holds the privilege and the target is IPv4, else the connect scan.
    """
    if chosen_method(scope, target, method) == "connect":
        return scan(scope, target, ports, options)
    from agent.sensor import synscan  # scapy is loaded there, and only when a SYN scan runs

    return synscan.syn_scan(scope, target, ports, options)


def chosen_method(scope: Scope, target: str, method: ScanMethod = "auto") -> Literal["connect", "syn"]:
    """The scan :func:`scan_ports` runs for ``method`` on ``target`` (inside ``scope``, else OutOfScope)."""
    if method not in ("auto", "connect", "syn"):
        raise SensorError(f"scan method {method!r}: one of auto, connect, syn")
    address = scope.check(target)
    if method == "connect":
        return "connect"
    if method == "syn":
        return "syn"
    from agent.sensor import synscan

    return "syn" if address.version == 4 and synscan.has_raw_socket_privilege() else "connect"


def _room_for_sockets() -> int:
    """Descriptors this process may still open, keeping some for everything else it does."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 512
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65536
    return max(16, soft - 128 - len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else soft // 2)


async def _scan(host: str, ports: Sequence[int], options: ScanOptions) -> list[PortState]:
    """Every port once, then the unanswered ones once more. A SYN lost on the way (a congested link,
    a rate-limiting firewall, the small queue a kernel keeps while it resolves a new neighbour) is
    not a filtered port, and reporting an open port as filtered would hide it from the allow-list:
    one retry, as nmap makes by default too."""
    if not ports:
        return []
    gate = asyncio.Semaphore(max(1, min(options.concurrency, _room_for_sockets())))
    interval = 1.0 / options.rate_per_s if options.rate_per_s > 0 else 0.0

    async def wave(batch: Sequence[int]) -> list[PortState]:
        start = time.monotonic()

        async def one(i: int, port: int) -> PortState:
            async with gate:
                due = start + i * interval  # paced: connection i starts no earlier than i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                return await _probe(host, port, options)

        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(batch))))

    states = {s.port: s for s in await wave(ports)}
    unanswered = [p for p in ports if states[p].state == "filtered"]
    if unanswered:
        states.update({s.port: s for s in await wave(unanswered)})
    return [states[p] for p in ports]


async def _probe(host: str, port: int, options: ScanOptions) -> PortState:
    began = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), options.timeout_s)
    except TimeoutError:
        return PortState(port, "filtered")
    except ConnectionRefusedError:
        return PortState(port, "closed", rtt_ms=round((time.monotonic() - began) * 1000, 3))
    except OSError as exc:
        if exc.errno in _UNREACHABLE:
            return PortState(port, "filtered")
        raise SensorError(f"{host}:{port}: {exc.strerror or exc}") from exc
    rtt = round((time.monotonic() - began) * 1000, 3)
    banner = None
    try:
        data = await asyncio.wait_for(reader.read(BANNER_BYTES), options.banner_timeout_s)
        banner = data.decode("utf-8", "replace").strip() or None
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(writer.wait_closed(), 0.5)
    return PortState(port, "open", banner, rtt)


def sntp(scope: Scope, target: str, port: int = 123, timeout_s: float = 2.0, samples: int = 3) -> SntpMeasurement:
    """One SNTP measurement of ``target``'s NTP service (the best of ``samples``), inside ``scope``.
    ``ok`` False with ``error`` says why there is none (no answer, refused, a kiss-of-death)."""
    from checks.ntp.sntp import measure

    address = scope.check(target)
    return measure(str(address), port, timeout_s, samples)
