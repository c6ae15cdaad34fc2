"""Pure part of the ``ports`` check: raw socket rows in, typed listeners out.

Nothing here touches the host, so it is fed from JSON fixtures of real ``psutil`` output in tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from checks.base import Result
from proto.vigil.v1 import ports_pb2


class ConnRow(NamedTuple):
    """One socket as ``psutil.net_connections`` reports it.

    ``family`` and ``type`` are enum *names* ("AF_INET6", "SOCK_DGRAM") rather than numbers,
    because the numbers differ between OSes (AF_INET6 is 10 on Linux, 30 on macOS, 23 on Windows)
    and fixtures captured on one must parse the same anywhere.
    """

    family: str
    type: str
    laddr: tuple[str, int] | None
    raddr: tuple[str, int] | None
    status: str
    pid: int | None


class ProcInfo(NamedTuple):
    """What could be read about one process; "" where the OS refused or the process is gone."""

    name: str = ""
    exe: str = ""
    username: str = ""


@dataclass(frozen=True)
class Listener:
    """A socket that accepts traffic from the network."""

    proto: str
    address: str
    port: int
    # None when the OS did not say which process owns the socket (psutil without root); never guessed.
    pid: int | None
    process: str = ""
    exe: str = ""
    user: str = ""

    @property
    def owner_known(self) -> bool:
        return self.pid is not None

    def to_proto(self) -> ports_pb2.PortsListener:
        return ports_pb2.PortsListener(
            proto=self.proto,
            address=self.address,
            port=self.port,
            # The wire has no "unset" for a uint32, so an unknown owner travels as 0 + owner_known=False.
            pid=self.pid if self.pid is not None else 0,
            process=self.process,
            exe=self.exe,
            user=self.user,
            owner_known=self.owner_known,
        )

    @classmethod
    def from_proto(cls, msg: ports_pb2.PortsListener) -> Listener:
        return cls(
            proto=msg.proto,
            address=msg.address,
            port=msg.port,
            pid=msg.pid if msg.owner_known else None,
            process=msg.process,
            exe=msg.exe,
            user=msg.user,
        )


@dataclass
class PortsResult(Result):
    """Every listening socket of the host, sorted by (proto, port, address)."""

    listeners: list[Listener] = field(default_factory=list)

    @property
    def unknown_owner(self) -> int:
        """How many listeners the agent could not attribute to a process."""
        return sum(1 for listener in self.listeners if not listener.owner_known)

    def to_proto(self) -> ports_pb2.PortsResult:
        return ports_pb2.PortsResult(listeners=[listener.to_proto() for listener in self.listeners])

    @classmethod
    def from_proto(cls, msg: ports_pb2.PortsResult) -> PortsResult:
        return cls(listeners=[Listener.from_proto(m) for m in msg.listeners])


_PROTOS: Mapping[tuple[str, str], str] = {
    ("AF_INET", "SOCK_STREAM"): "tcp",
    ("AF_INET6", "SOCK_STREAM"): "tcp6",
    ("AF_INET", "SOCK_DGRAM"): "udp",
    ("AF_INET6", "SOCK_DGRAM"): "udp6",
}


def _is_listening(proto: str, row: ConnRow) -> bool:
    if proto.startswith("tcp"):
        return row.status == "LISTEN"
    # UDP has no states; a socket that is not connect()ed to a peer takes datagrams from anyone.
    return row.raddr is None


def parse_connections(conns: Iterable[ConnRow], procs: Mapping[int, ProcInfo]) -> PortsResult:
    """Keep the listening TCP and unconnected UDP sockets of ``conns``, with their owners from ``procs``.

    Rows that are identical once reduced to (proto, address, port, pid) — the same socket held
    through two descriptors, or SO_REUSEPORT siblings in one process — are reported once.
    """
    seen: dict[tuple[str, str, int, int | None], Listener] = {}
    for row in conns:
        proto = _PROTOS.get((row.family, row.type))
        if proto is None or row.laddr is None or not _is_listening(proto, row):
            continue
        address, port = row.laddr
        key = (proto, address, port, row.pid)
        if key in seen:
            continue
        info = procs.get(row.pid, ProcInfo()) if row.pid is not None else ProcInfo()
        seen[key] = Listener(
            proto=proto,
            address=address,
            port=port,
            pid=row.pid,
            process=info.name,
            exe=info.exe,
            user=info.username,
        )
    # pid last only to make the order total, so two runs on an unchanged host compare equal.
    listeners = sorted(seen.values(), key=lambda x: (x.proto, x.port, x.address, x.pid if x.pid is not None else -1))
    return PortsResult(listeners=listeners)
