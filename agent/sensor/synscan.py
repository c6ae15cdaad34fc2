"""A half-open SYN scan of one target's ports, for a sensor that holds ``CAP_NET_RAW`` (Linux, IPv4).

It returns what :func:`agent.sensor.scan.scan` returns, one :class:`~agent.sensor.scan.PortState` per
port in the order given, with the same meanings:

- ``open``: the target answered our SYN with a SYN/ACK;
- ``closed``: it answered with a reset;
- ``filtered``: nothing answered, even to one retransmission of the unanswered SYNs within
  ``ScanOptions.timeout_s``, or an ICMP unreachable (type 3, code 1, 2, 3, 9, 10 or 13) came back.

The SYN scan reads no banners: no connection is ever made, so ``banner`` is always None (the connect
scan reads them). ``ScanOptions.concurrency`` and ``banner_timeout_s`` do not apply; ``rate_per_s``
paces the SYNs.

How it goes. One scan uses one source port (random, held by a bound TCP socket of ours for the scan so
no other local connection takes it) and one random initial sequence number. Every SYN leaves from one
raw socket, paced by ``rate_per_s``; the packets are a template crafted by scapy with only the
destination port and the checksum changed per port (crafting each packet with scapy costs some 250 µs,
more than the whole budget of a port). Answers are read from one packet socket with a BPF filter,
compiled by scapy (libpcap), that lets through only TCP from the target to our source port and ICMP
unreachables; scapy dissects them, and they are matched on the ports and on our sequence number.

The first round of SYNs is retransmitted early, as soon as the answers that were going to come have
come (four times the largest round trip seen, at least a tenth of the timeout, at most the whole
timeout; the whole timeout when nothing answered at all). A late answer to the first SYN still counts,
so a port is ``filtered`` only if nothing answered for the full timeout after its retransmission.

The sensor's own kernel answers each SYN/ACK with a reset, since no socket of ours accepts on that
port: that is what a half-open scan expects (nmap's SYN scan does the same). The packet socket has a
copy of the SYN/ACK before the kernel's TCP stack sees it, so the reset cannot hide the answer. We
also send a reset of our own to every open port before returning, so the scan itself leaves no
connection half-open on the target, whatever the sensor's TCP stack does with the answer. (A firewall
on the sensor that drops outgoing resets drops ours too; the target then times its entries out.)

scapy is heavy and only the sensor needs it: it is imported inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import random
import select
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.sensor import SensorError
from agent.sensor.scan import PortState, ScanOptions, Scope

if TYPE_CHECKING:
    from scapy.packet import Packet

_ETH_P_IP = 0x0800
_SO_ATTACH_FILTER = 26
_SO_RCVBUFFORCE = 33
_RCVBUF = 8 << 20  # room for every answer of a big scan arriving while we are still sending
_UNREACH_CODES = {1, 2, 3, 9, 10, 13}  # host, protocol, port unreachable; administratively prohibited
_SYN, _RST, _ACK = 0x02, 0x04, 0x10
_PORT_FIRST, _PORT_LAST = 32768, 60999  # Linux's default ephemeral range


def has_raw_socket_privilege() -> bool:
    """True if this process may open the raw and packet sockets a SYN scan needs (``CAP_NET_RAW``)."""
    kinds = [(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)]
    packet = getattr(socket, "AF_PACKET", None)
    if packet is None:  # not Linux: the reader is a Linux packet socket
        return False
    kinds.append((packet, socket.SOCK_DGRAM, socket.htons(_ETH_P_IP)))
    for family, kind, proto in kinds:
        try:
            socket.socket(family, kind, proto).close()
        except OSError:
            return False
    return True


def syn_scan(scope: Scope, target: str, ports: Sequence[int], options: ScanOptions = ScanOptions()) -> list[PortState]:
    """SYN-scan ``ports`` of ``target`` (which ``scope`` must hold); one state per port, in the order given.

    Banners are not read (``banner`` is None). Refuses, before any packet: a target outside ``scope``
    (:class:`~agent.sensor.scan.OutOfScope`), an IPv6 target, and a process without ``CAP_NET_RAW``
    (both :class:`~agent.sensor.SensorError`).
    """
    address = scope.check(target)
    if not isinstance(address, ipaddress.IPv4Address):
        raise SensorError(f"{address}: the SYN scan is IPv4 only; only the connect scan does IPv6")
    if not has_raw_socket_privilege():
        raise SensorError("the SYN scan needs CAP_NET_RAW (raw and packet sockets): run the sensor with it, "
                          "or use the connect scan")
    for port in ports:
        if not 1 <= port <= 65535:
            raise SensorError(f"port {port}: outside 1-65535")
    unique = sorted(set(ports))
    found = _Scan(str(address), options).run(unique) if unique else {}
    return [found[p] for p in ports]


def tcp_for_port(template: bytes, port: int) -> bytes:
    """``template`` (a TCP header crafted for destination port 0) for ``port``: the port set, the checksum
    adjusted for it (RFC 1624's incremental update, so nothing else need be summed again)."""
    (old,) = struct.unpack_from("!H", template, 16)
    total = (~old & 0xFFFF) + port  # the old port was 0, which adds nothing to a one's complement sum
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return template[:2] + struct.pack("!H", port) + template[4:16] + struct.pack("!H", ~total & 0xFFFF) + template[18:]


def craft_template(src: str, dst: str, sport: int, seq: int, flags: str) -> bytes:
    """A TCP header from ``src``:``sport`` to ``dst`` port 0, its checksum over the IPv4 pseudo-header."""
    from scapy.layers.inet import IP, TCP

    options = [("MSS", 1460)] if "S" in flags else []
    packet = IP(src=src, dst=dst) / TCP(sport=sport, dport=0, seq=seq, flags=flags, window=1024, options=options)
    return bytes(packet[TCP])


def _source_address(dst: str) -> str:
    """The address the kernel's routing gives our packets to ``dst`` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((dst, 9))
        except OSError as exc:
            raise SensorError(f"{dst}: no route ({exc.strerror or exc})") from exc
        return str(probe.getsockname()[0])


def _reserve_port() -> socket.socket:
    """A TCP socket bound to a random free port of the ephemeral range: our source port for the scan."""
    rng = random.SystemRandom()
    for _ in range(64):
        held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            held.bind(("0.0.0.0", rng.randint(_PORT_FIRST, _PORT_LAST)))
        except OSError as exc:
            held.close()
            if exc.errno != errno.EADDRINUSE:
                raise SensorError(f"cannot reserve a source port: {exc.strerror or exc}") from exc
            continue
        return held
    raise SensorError("cannot reserve a source port: 64 random ports of the ephemeral range were all in use")


def _attach_filter(sock: socket.socket, expression: str) -> None:
    """Compile ``expression`` for packets that begin with their IP header, and attach it to ``sock``."""
    from scapy.arch.common import compile_filter
    from scapy.data import DLT_RAW
    from scapy.error import Scapy_Exception

    try:
        program = compile_filter(expression, linktype=DLT_RAW)
    except (ImportError, OSError, Scapy_Exception) as exc:
        raise SensorError(f"cannot compile the capture filter {expression!r} (libpcap): {exc}") from exc
    fprog = struct.pack("HL", program.bf_len, ctypes.addressof(program.bf_insns.contents))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


@dataclass
class _Scan:
    host: str
    options: ScanOptions
    sport: int = 0
    seq: int = 0
    sent_at: dict[int, float] = field(default_factory=dict)
    found: dict[int, PortState] = field(default_factory=dict)
    max_rtt_s: float = 0.0

    def run(self, ports: list[int]) -> dict[int, PortState]:
        src = _source_address(self.host)
        wanted = set(ports)
        with contextlib.ExitStack() as stack:
            held = stack.enter_context(_reserve_port())
            self.sport = held.getsockname()[1]
            self.seq = random.SystemRandom().getrandbits(32)
            reader = stack.enter_context(self._open_reader())
            sender = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP))
            syn = craft_template(src, self.host, self.sport, self.seq, "S")
            timeout = self.options.timeout_s
            for round_ in (1, 2):
                todo = [p for p in ports if p not in self.found]
                if not todo:
                    break
                last = self._send_paced(sender, reader, syn, todo, wanted)
                if round_ == 1 and self.max_rtt_s > 0:
                    wait = min(timeout, max(timeout / 10, 4 * self.max_rtt_s))
                else:
                    wait = timeout
                self._read_until(reader, last + wait, wanted)
            opened = [p for p, s in self.found.items() if s.state == "open"]
            if opened:  # the kernel has reset these already; ours does not rely on it
                rst = craft_template(src, self.host, self.sport, (self.seq + 1) & 0xFFFFFFFF, "R")
                for port in opened:
                    self._send(sender, reader, tcp_for_port(rst, port), wanted)
        for port in ports:
            self.found.setdefault(port, PortState(port, "filtered"))
        return self.found

    @contextlib.contextmanager
    def _open_reader(self) -> Iterator[socket.socket]:
        # A cooked packet socket: each packet begins with its IP header, whatever the link.
        reader = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_IP))
        try:
            try:
                reader.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)
            except OSError:
                reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            _attach_filter(reader, f"(tcp and src host {self.host} and dst port {self.sport})"
                                   " or (icmp and icmp[0] == 3)")
            reader.setblocking(False)
            with contextlib.suppress(BlockingIOError):  # what came in before the filter was attached
                while True:
                    reader.recv(65535)
            yield reader
        finally:
            reader.close()

    def _send_paced(self, sender: socket.socket, reader: socket.socket, syn: bytes, ports: list[int],
                    wanted: set[int]) -> float:
        """Send a SYN to each port, no faster than ``rate_per_s``, reading answers in between; the time of
        the last SYN."""
        interval = 1.0 / self.options.rate_per_s if self.options.rate_per_s > 0 else 0.0
        start = time.monotonic()
        i = 0
        while i < len(ports):
            now = time.monotonic()
            while i < len(ports) and start + i * interval <= now:
                port = ports[i]
                self.sent_at[port] = self._send(sender, reader, tcp_for_port(syn, port), wanted)
                i += 1
            if i < len(ports):
                self._read_until(reader, start + i * interval, wanted)
            else:
                self._read_until(reader, 0.0, wanted)  # what is there already, without waiting
        return time.monotonic()

    def _send(self, sender: socket.socket, reader: socket.socket, packet: bytes, wanted: set[int]) -> float:
        for _ in range(1000):
            try:
                sender.sendto(packet, (self.host, 0))
                return time.monotonic()
            except OSError as exc:
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise SensorError(f"{self.host}: sending a SYN failed: {exc.strerror or exc}") from exc
                self._read_until(reader, time.monotonic() + 0.001, wanted)  # the queue is full: let it drain
        raise SensorError(f"{self.host}: the send queue stayed full for a second")

    def _read_until(self, reader: socket.socket, deadline: float, wanted: set[int]) -> None:
        """Read answers until ``deadline`` (monotonic) or until every wanted port has one."""
        while True:
            while True:
                try:
                    data = reader.recv(65535)
                except BlockingIOError:
                    break
                self._answer(data, time.monotonic(), wanted)
            left = deadline - time.monotonic()
            if left <= 0 or len(self.found) == len(wanted):
                return
            select.select([reader], [], [], left)

    def _answer(self, data: bytes, when: float, wanted: set[int]) -> None:
        if len(data) < 20 or data[0] >> 4 != 4:
            return
        ihl = (data[0] & 0x0F) * 4
        if data[9] == socket.IPPROTO_TCP:
            self._tcp_answer(data[ihl:], when, wanted)
        elif data[9] == socket.IPPROTO_ICMP:
            self._icmp_answer(data, wanted)

    def _tcp_answer(self, segment: bytes, when: float, wanted: set[int]) -> None:
        from scapy.layers.inet import TCP

        tcp: Packet = TCP(segment)
        port = int(tcp.sport)
        if (int(tcp.dport) != self.sport or port not in wanted or port in self.found
                or int(tcp.ack) != (self.seq + 1) & 0xFFFFFFFF):
            return
        flags = int(tcp.flags)
        if flags & (_SYN | _ACK) == _SYN | _ACK:
            state = "open"
        elif flags & _RST:
            state = "closed"
        else:
            return
        rtt = when - self.sent_at[port]
        self.max_rtt_s = max(self.max_rtt_s, rtt)
        self.found[port] = PortState(port, state, None, round(rtt * 1000, 3))

    def _icmp_answer(self, data: bytes, wanted: set[int]) -> None:
        from scapy.layers.inet import ICMP, IP, IPerror, TCPerror

        packet: Packet = IP(data)
        if not (packet.haslayer(ICMP) and packet.haslayer(IPerror) and packet.haslayer(TCPerror)):
            return
        icmp, inner, tcp = packet[ICMP], packet[IPerror], packet[TCPerror]
        if int(icmp.type) != 3 or int(icmp.code) not in _UNREACH_CODES:
            return
        port = int(tcp.dport)
        if inner.dst != self.host or int(tcp.sport) != self.sport or port not in wanted or port in self.found:
            return
        self.found[port] = PortState(port, "filtered")
