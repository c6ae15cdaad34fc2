"""A minimal SNTP client (RFC 4330 / RFC 5905 on-wire protocol) for measuring the clock directly.

The daemon's own report can be wrong or stale (misconfigured servers, a daemon that lost its
sources but still says "Normal"), so the check also asks the baseline's reference servers itself.

:func:`build_request` and :func:`parse_response` are pure and take the local send (T1) and receive
(T4) times as arguments, so the arithmetic is tested on synthetic packets; :func:`measure` is the
only part that touches the network.

Timestamps on the wire are 64-bit fixed point (32 bits of seconds, 32 of fraction) counted from
1900-01-01, not from the Unix epoch. Offsets use NTP's sign: reference minus local, so a clock that
runs fast has a negative offset.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

from common.hostport import split_host_port
from proto.vigil.v1 import ntp_pb2

NTP_PORT = 123
PACKET_LEN = 48
# Seconds from 1900-01-01 (NTP era 0) to 1970-01-01 (Unix epoch): 70 years including 17 leap days.
NTP_UNIX_DELTA = 2_208_988_800
_ERA = 2**32
_LEAP_UNSYNCHRONISED = 3
_MODE_CLIENT = 3
_MODE_SERVER = 4
_VERSION = 4
# LI VN Mode, stratum, poll, precision, root delay, root dispersion, reference id,
# then four timestamps: reference, originate, receive, transmit.
_HEADER = struct.Struct("!BBbbII4sQQQQ")


@dataclass(frozen=True)
class SntpMeasurement:
    """One direct SNTP measurement against a reference server (the best of a few samples).

    ``ok`` False means the server could not be used as a reference; ``error`` says why and the
    numbers are then whatever the server claimed (stratum, leap) or 0.
    """

    server: str
    ok: bool
    error: str = ""
    offset_ms: float = 0.0
    delay_ms: float = 0.0
    stratum: int = 0
    leap: int = 0
    reference_id: str = ""

    def to_proto(self) -> ntp_pb2.SntpMeasurement:
        return ntp_pb2.SntpMeasurement(
            server=self.server,
            ok=self.ok,
            error=self.error,
            offset_ms=self.offset_ms,
            delay_ms=self.delay_ms,
            stratum=self.stratum,
            leap=self.leap,
            reference_id=self.reference_id,
        )

    @classmethod
    def from_proto(cls, msg: ntp_pb2.SntpMeasurement) -> SntpMeasurement:
        return cls(
            server=msg.server,
            ok=msg.ok,
            error=msg.error,
            offset_ms=msg.offset_ms,
            delay_ms=msg.delay_ms,
            stratum=msg.stratum,
            leap=msg.leap,
            reference_id=msg.reference_id,
        )


def to_ntp_timestamp(unix_time: float) -> int:
    """Unix seconds -> 64-bit NTP timestamp (wraps at the 2036 era boundary as the wire does)."""
    return round((unix_time + NTP_UNIX_DELTA) * _ERA) % 2**64


def from_ntp_timestamp(value: int, near: float) -> float:
    """64-bit NTP timestamp -> Unix seconds, choosing the 136-year era closest to ``near``.

    The wire carries no era number; picking the era nearest the local clock keeps the arithmetic
    right across 2036-02-07 as long as the clocks are within 68 years of each other.
    """
    seconds = value / _ERA - NTP_UNIX_DELTA
    eras = round((near - seconds) / _ERA)
    return seconds + eras * _ERA


def build_request(transmit_time: float) -> bytes:
    """A 48-byte client request (LI 0, version 4, mode 3) whose transmit timestamp is ``transmit_time``.

    The server copies that timestamp into its reply's originate field, which is how a reply is
    matched to its request and how blind spoofed replies are rejected.
    """
    first = (0 << 6) | (_VERSION << 3) | _MODE_CLIENT
    return _HEADER.pack(first, 0, 0, 0, 0, 0, b"\0\0\0\0", 0, 0, 0, to_ntp_timestamp(transmit_time))


def originate_matches(data: bytes, t1: float) -> bool:
    """Whether ``data`` answers the request sent at ``t1`` (a late reply to an earlier sample does not)."""
    return len(data) >= PACKET_LEN and _HEADER.unpack_from(data)[8] == to_ntp_timestamp(t1)


def reference_id_text(refid: bytes, stratum: int) -> str:
    """The reference id as ``ntpq``/``chronyc`` show it: ASCII for stratum 0-1, else a dotted quad."""
    if stratum <= 1:
        # Kiss codes (stratum 0) and reference clock names (stratum 1) are up to four ASCII letters.
        return refid.rstrip(b"\0").decode("ascii", errors="replace")
    # For an IPv6 upstream this is the first four bytes of an MD5 hash; shown the same way as ntpq does.
    return ".".join(str(b) for b in refid)


def parse_response(data: bytes, t1: float, t4: float, server: str = "") -> SntpMeasurement:
    """Turn a server reply into a measurement; ``t1``/``t4`` are the local send/receive times (Unix s).

    offset θ = ((T2 - T1) + (T3 - T4)) / 2 and round-trip delay δ = (T4 - T1) - (T3 - T2), where T2
    and T3 are the server's receive and transmit timestamps.
    """
    if len(data) < PACKET_LEN:
        return SntpMeasurement(server, ok=False, error=f"short reply: {len(data)} bytes, expected at least 48")
    first, stratum, _poll, _precision, _rdelay, _rdisp, refid, _ref, orig, recv, xmit = _HEADER.unpack_from(data)
    leap, version, mode = first >> 6, (first >> 3) & 0x7, first & 0x7
    stratum &= 0xFF
    claimed = {"stratum": stratum, "leap": leap, "reference_id": reference_id_text(refid, stratum)}
    if mode != _MODE_SERVER:
        return SntpMeasurement(server, ok=False, error=f"reply has mode {mode}, expected 4 (server)", **claimed)
    if version < 1:
        return SntpMeasurement(server, ok=False, error="reply has version 0", **claimed)
    # Checked before the kiss code: RFC 5905 has clients ignore a kiss-o'-death that does not echo
    # their own timestamp, or anyone on the path could silence a reference server.
    if orig != to_ntp_timestamp(t1):
        return SntpMeasurement(
            server, ok=False, error="reply's originate timestamp does not match the request", **claimed
        )
    if stratum == 0:
        code = claimed["reference_id"] or "?"
        return SntpMeasurement(server, ok=False, error=f"kiss-o'-death {code}: server refuses to serve time", **claimed)
    if leap == _LEAP_UNSYNCHRONISED:
        return SntpMeasurement(server, ok=False, error="server is unsynchronised (leap indicator 3)", **claimed)
    if xmit == 0:
        return SntpMeasurement(server, ok=False, error="reply has no transmit timestamp", **claimed)
    t2 = from_ntp_timestamp(recv, near=t1)
    t3 = from_ntp_timestamp(xmit, near=t1)
    offset = ((t2 - t1) + (t3 - t4)) / 2
    delay = (t4 - t1) - (t3 - t2)
    return SntpMeasurement(server, ok=True, offset_ms=offset * 1000, delay_ms=delay * 1000, **claimed)


def split_server(spec: str) -> tuple[str, int]:
    """``"host"``, ``"host:port"``, ``"[v6]:port"`` or a bare IPv6 address -> (host, port).

    Raises ValueError when the port is not a number from 1 to 65535.
    """
    return split_host_port(spec, NTP_PORT)


def _label(host: str, port: int) -> str:
    if port == NTP_PORT:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def measure(server: str, port: int = NTP_PORT, timeout: float = 2.0, samples: int = 3) -> SntpMeasurement:
    """Ask ``server`` for the time ``samples`` times; return the sample with the smallest delay.

    The smallest round trip has the least room for asymmetric queueing, which is the error that
    NTP's offset formula cannot see. When no sample is good, the last failure is returned.
    """
    label = _label(server, port)
    try:
        addresses = socket.getaddrinfo(server, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        return SntpMeasurement(label, ok=False, error=f"cannot resolve {server!r}: {exc}")
    failure = SntpMeasurement(label, ok=False, error=f"{server!r} resolved to no address")
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as sock:
                # A connected UDP socket makes the kernel drop datagrams from anyone else and report
                # an ICMP port-unreachable as ConnectionRefusedError instead of a silent timeout.
                sock.connect(address)
                best, failure = _sample(sock, label, timeout, max(1, samples))
        except OSError as exc:
            # Typically an unreachable IPv6 route while IPv4 would work: try the next address.
            failure = SntpMeasurement(label, ok=False, error=f"{address[0]}: {exc}")
            continue
        if best is not None:
            return best
        if _is_kiss(failure):
            break
    return failure


def _sample(
    sock: socket.socket, label: str, timeout: float, samples: int
) -> tuple[SntpMeasurement | None, SntpMeasurement]:
    best: SntpMeasurement | None = None
    failure = SntpMeasurement(label, ok=False, error="no sample taken")
    for _ in range(samples):
        result = _exchange(sock, label, timeout)
        if result.ok:
            if best is None or result.delay_ms < best.delay_ms:
                best = result
            continue
        failure = result
        if _is_kiss(result):
            # RFC 4330: a client that gets a kiss-o'-death must stop sending to that server.
            break
    return best, failure


def _is_kiss(result: SntpMeasurement) -> bool:
    return not result.ok and result.error.startswith("kiss-o'-death")


def _exchange(sock: socket.socket, label: str, timeout: float) -> SntpMeasurement:
    deadline = time.monotonic() + timeout
    t1 = time.time()
    try:
        sock.send(build_request(t1))
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            data = sock.recv(1024)
            t4 = time.time()
            # A late answer to an earlier sample is skipped rather than counted as an error.
            if originate_matches(data, t1) or len(data) < PACKET_LEN:
                return parse_response(data, t1, t4, server=label)
    except TimeoutError:
        pass
    except ConnectionRefusedError:
        return SntpMeasurement(label, ok=False, error="port unreachable: no NTP server listening")
    return SntpMeasurement(label, ok=False, error=f"no reply within {timeout:g} s")
