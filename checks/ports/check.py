"""Collecting part of the ``ports`` check: ask psutil, hand the raw rows to :func:`parse_connections`."""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import psutil

from checks.base import Args, Check, CheckError, Context
from checks.ports.parse import ConnRow, PortsResult, ProcInfo, parse_connections

# ZombieProcess is a NoSuchProcess; AccessDenied is what non-root gets for other users' processes.
_UNREADABLE = (psutil.NoSuchProcess, psutil.AccessDenied)


@dataclass
class PortsArgs(Args):
    """No parameters yet."""

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PortsArgs:
        # Unknown keys are ignored rather than refused so that a controller newer than this agent
        # can push parameters of a later version without breaking the check on old agents.
        return cls()


class Ports(Check[PortsArgs, PortsResult]):
    """Every listening TCP socket and unconnected UDP socket, with the process that owns it.

    Example result::

        PortsResult(listeners=[
            Listener(proto="tcp", address="0.0.0.0", port=22, pid=812, process="sshd",
                     exe="/usr/sbin/sshd", user="root"),
            Listener(proto="udp6", address="::", port=5353, pid=None, process="", exe="", user=""),
        ])

    ``pid=None`` (``owner_known`` False) means the OS did not say who owns the socket; the check then
    adds a warning to ``ctx.warnings``, since it saw the socket but not all of what it looks at.
    """

    id = "ports"
    version = 1
    platforms = ("linux", "darwin", "win32")
    args_type: ClassVar[type[Args]] = PortsArgs
    report_field = "ports"
    default_interval_s = 300

    def collect(self, args: PortsArgs, ctx: Context) -> Iterator[PortsResult]:
        rows, denied = _connections()
        pids = {row.pid for row in rows if row.pid is not None}
        result = parse_connections(rows, {pid: _proc_info(pid) for pid in sorted(pids)})
        if denied:
            ctx.warnings.append(
                f"{denied} {'process' if denied == 1 else 'processes'} could not be inspected, so their sockets "
                "are missing: run the agent as root to see them"
            )
        if result.unknown_owner:
            ctx.warnings.append(_unknown_owner_warning(result.unknown_owner, _is_root()))
        yield result


class _Conn(Protocol):
    """What ``_row`` needs of psutil's ``sconn`` (system-wide) and ``pconn`` (per process) tuples."""

    @property
    def family(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def laddr(self) -> tuple[str, int] | tuple[()]: ...
    @property
    def raddr(self) -> tuple[str, int] | tuple[()]: ...
    @property
    def status(self) -> str: ...


def _connections() -> tuple[list[ConnRow], int]:
    """Every inet socket of the host, and how many processes had to be skipped to get them."""
    try:
        return [_row(c, c.pid) for c in psutil.net_connections(kind="inet")], 0
    except psutil.AccessDenied:
        # macOS lets only root list all sockets at once, yet a user may still list their own processes'.
        return _connections_per_process()


def _connections_per_process() -> tuple[list[ConnRow], int]:
    rows: list[ConnRow] = []
    denied = inspected = 0
    try:
        processes = list(psutil.process_iter())
    except psutil.Error as exc:
        raise CheckError(
            f"cannot list sockets: psutil.net_connections() was denied and process_iter() failed ({exc}); "
            "run the agent as root"
        ) from exc
    for proc in processes:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.AccessDenied:
            denied += 1
            continue
        except psutil.NoSuchProcess:
            continue
        inspected += 1
        rows.extend(_row(c, proc.pid) for c in conns)
    if not inspected:
        raise CheckError(
            "cannot list sockets: the OS denied psutil.net_connections() and the connections of every "
            f"one of {denied} processes; run the agent as root (macOS lets only root list sockets)"
        )
    return rows, denied


def _row(conn: _Conn, pid: int | None) -> ConnRow:
    return ConnRow(
        family=_enum_name(conn.family),
        type=_enum_name(conn.type),
        laddr=_addr(conn.laddr),
        raddr=_addr(conn.raddr),
        status=conn.status,
        pid=pid,
    )


def _enum_name(value: int) -> str:
    # psutil hands back a plain int for a family or type the socket module has no enum member for.
    return value.name if isinstance(value, enum.Enum) else str(value)


def _addr(addr: tuple[str, int] | tuple[()]) -> tuple[str, int] | None:
    # psutil marks "no address" with an empty tuple.
    if len(addr) == 2:
        return (addr[0], addr[1])
    return None


def _proc_info(pid: int) -> ProcInfo:
    try:
        proc = psutil.Process(pid)
    except _UNREADABLE:
        return ProcInfo()
    with proc.oneshot():
        return ProcInfo(name=_read(proc.name), exe=_read(proc.exe), username=_read(proc.username))


def _read(getter: Callable[[], str]) -> str:
    # Field by field: a non-root agent may read another user's process name but not its exe.
    try:
        return getter()
    except _UNREADABLE:
        return ""


def _is_root() -> bool:
    geteuid = getattr(os, "geteuid", None)  # absent on Windows
    return geteuid is not None and geteuid() == 0


def _unknown_owner_warning(count: int, as_root: bool) -> str:
    what = "1 listening socket has" if count == 1 else f"{count} listening sockets have"
    if as_root:
        # Root sees every process in its PID namespace, so what is left has no process to show.
        return (
            f"{what} an unknown owner although the agent runs as root: they belong to the kernel "
            "(e.g. NFS, WireGuard) or to processes in another PID namespace"
        )
    return f"{what} an unknown owner: run the agent as root to see them"
