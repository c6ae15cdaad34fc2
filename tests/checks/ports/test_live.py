"""``Ports.collect()`` against real sockets opened by the test itself."""

from __future__ import annotations

import os
import socket

import psutil
import pytest

from checks.base import CheckError, Context
from checks.ports import Listener, Ports, PortsArgs, PortsResult


def _collect() -> tuple[PortsResult, Context]:
    ctx = Context()
    [result] = Ports().collect(PortsArgs(), ctx)
    return result, ctx


def _find(result: PortsResult, proto: str, port: int) -> list[Listener]:
    return [x for x in result.listeners if x.proto == proto and x.port == port]


def test_finds_own_tcp_listener() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result, _ = _collect()
    me = psutil.Process()
    assert _find(result, "tcp", port) == [
        Listener("tcp", "127.0.0.1", port, os.getpid(), me.name(), me.exe(), me.username())
    ]


def test_udp_listener_found_connected_udp_and_tcp_client_not() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as connected,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server,
    ):
        udp.bind(("127.0.0.1", 0))
        connected.bind(("127.0.0.1", 0))
        connected.connect(udp.getsockname())
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            result, _ = _collect()
            udp_port, connected_port, client_port = (s.getsockname()[1] for s in (udp, connected, client))
    assert [x.pid for x in _find(result, "udp", udp_port)] == [os.getpid()]
    assert _find(result, "udp", connected_port) == []
    assert _find(result, "tcp", client_port) == []


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 in this Python")
def test_finds_own_ipv6_listener() -> None:
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.bind(("::1", 0))
    except OSError as exc:
        sock.close()
        pytest.skip(f"cannot bind ::1 here: {exc}")
    with sock:
        sock.listen()
        port = sock.getsockname()[1]
        result, _ = _collect()
    assert [(x.address, x.pid) for x in _find(result, "tcp6", port)] == [("::1", os.getpid())]


def test_falls_back_to_per_process_when_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    # What macOS does to a non-root agent.
    def denied(kind: str = "inet") -> list[object]:
        raise psutil.AccessDenied()

    monkeypatch.setattr(psutil, "net_connections", denied)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        result, ctx = _collect()
        port = sock.getsockname()[1]
    assert [x.pid for x in _find(result, "tcp", port)] == [os.getpid()]
    if os.geteuid() != 0:
        assert any("could not be inspected" in w for w in ctx.warnings)


def test_denied_everywhere_is_a_check_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Locked:
        pid = 1

        def net_connections(self, kind: str = "inet") -> list[object]:
            raise psutil.AccessDenied(self.pid)

    def denied(kind: str = "inet") -> list[object]:
        raise psutil.AccessDenied()

    monkeypatch.setattr(psutil, "net_connections", denied)
    monkeypatch.setattr(psutil, "process_iter", lambda: iter([Locked(), Locked()]))
    with pytest.raises(CheckError, match="run the agent as root"):
        _collect()
