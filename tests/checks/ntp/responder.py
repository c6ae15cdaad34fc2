"""An SNTP server for tests whose clock is deliberately offset from the host's.

It speaks the real NTP packet format but is written independently of ``checks.ntp.sntp`` (its own
struct layout and epoch arithmetic), so a shared mistake cannot make client and server agree.

In-process, as a context manager::

    with sntp_responder(offset_s=5.0) as server:
        measure(server.host, server.port)          # offset ≈ +5000 ms: the reference is ahead

As a process (e.g. inside a network namespace), it prints ``ready <host> <port>`` once bound and
serves until its stdin closes::

    ip netns exec NS python -m tests.checks.ntp.responder --offset 5 --host 10.201.9.1 --port 123
"""

from __future__ import annotations

import argparse
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_NTP_EPOCH_OFFSET = 2_208_988_800  # 1900-01-01 -> 1970-01-01 in seconds
_PACKET = struct.Struct(">BBbbII4sQQQQ")


def _ntp64(unix_time: float) -> int:
    seconds = int(unix_time) + _NTP_EPOCH_OFFSET
    fraction = int((unix_time - int(unix_time)) * 2**32)
    return ((seconds % 2**32) << 32) | fraction


@dataclass
class Responder:
    """A running responder: where it listens and how many requests it answered."""

    host: str
    port: int
    offset_s: float
    leap: int
    stratum: int
    refid: bytes
    requests: int = 0
    _sock: socket.socket = field(init=False, repr=False)
    _wake: socket.socket = field(init=False, repr=False)

    @property
    def server(self) -> str:
        """The ``host:port`` form a baseline's ``servers`` list takes."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def reply(self, request: bytes, received_at: float) -> bytes | None:
        """The answer to one datagram (None for anything that is not a client request)."""
        if len(request) < _PACKET.size or request[0] & 0x7 != 3:
            return None
        version = (request[0] >> 3) & 0x7
        poll = request[2]
        client_transmit = request[40:48]
        first = (self.leap << 6) | (version << 3) | 4
        packet = _PACKET.pack(
            first,
            self.stratum,
            poll if poll < 128 else poll - 256,
            -20,  # precision: about a microsecond
            0x0000_0100,  # root delay 1/256 s in 16.16
            0x0000_0080,  # root dispersion 1/512 s
            self.refid,
            _ntp64(received_at + self.offset_s - 16),  # last "sync" of this fake server
            0,  # originate: filled in below with the client's transmit bytes, untouched
            _ntp64(received_at + self.offset_s),
            0,
        )
        transmit = _ntp64(time.time() + self.offset_s)
        return packet[:24] + client_transmit + packet[32:40] + transmit.to_bytes(8, "big")

    def _serve(self) -> None:
        while True:
            # The wake socket, not a timeout, ends the loop: shutdown is immediate and nothing polls.
            readable, _, _ = select.select([self._sock, self._wake], [], [])
            if self._wake in readable:
                return
            data, peer = self._sock.recvfrom(1024)
            received_at = time.time()
            answer = self.reply(data, received_at)
            if answer is not None:
                self.requests += 1
                self._sock.sendto(answer, peer)


def _default_refid(stratum: int) -> bytes:
    if stratum == 0:
        return b"DENY"  # a kiss code
    if stratum == 1:
        return b"GPS\0"
    return bytes([10, 201, 0, 1])


@contextmanager
def sntp_responder(
    offset_s: float,
    host: str = "127.0.0.1",
    port: int = 0,
    leap: int = 0,
    stratum: int = 2,
    refid: bytes | None = None,
) -> Iterator[Responder]:
    """Serve SNTP on ``host:port`` (0: an ephemeral port) from a thread, with a clock ``offset_s`` ahead.

    ``leap=3`` makes it claim to be unsynchronised, ``stratum=0`` sends a kiss-o'-death (``refid``
    defaults to ``DENY``). The socket is closed and the thread joined on exit.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    wake_r, wake_w = socket.socketpair()
    try:
        sock.bind((host, port))
        responder = Responder(
            host=host,
            port=sock.getsockname()[1],
            offset_s=offset_s,
            leap=leap,
            stratum=stratum,
            refid=refid if refid is not None else _default_refid(stratum),
        )
        responder._sock = sock
        responder._wake = wake_r
        thread = threading.Thread(target=responder._serve, name=f"sntp-responder-{responder.port}", daemon=True)
        thread.start()
        try:
            yield responder
        finally:
            wake_w.send(b"x")
            thread.join(timeout=5)
    finally:
        for s in (sock, wake_r, wake_w):
            s.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="SNTP responder with an offset clock (for tests)")
    parser.add_argument("--offset", type=float, default=0.0, help="seconds this server's clock is ahead")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--leap", type=int, default=0)
    parser.add_argument("--stratum", type=int, default=2)
    args = parser.parse_args()
    with sntp_responder(args.offset, args.host, args.port, args.leap, args.stratum) as server:
        print(f"ready {server.host} {server.port}", flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin (or dies)


if __name__ == "__main__":
    main()
