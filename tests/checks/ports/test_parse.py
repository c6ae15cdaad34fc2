"""``parse_connections`` on real psutil output captured by ``capture_fixture.py record`` (see its table)."""

from __future__ import annotations

from typing import Any

import pytest

from checks.ports import ConnRow, Listener, PortsResult, ProcInfo, parse_connections
from proto.vigil.v1 import ports_pb2
from tests.checks.ports import _fixtures

ROOT = _fixtures.raw("linux_root.json")
NONROOT = _fixtures.raw("linux_nonroot.json")
PIDS: dict[str, int] = ROOT["started"]["pids"]
PYENV = "/root/.pyenv/versions/3.11.7/bin/python3.11"


def parse(data: dict[str, Any]) -> PortsResult:
    return parse_connections(_fixtures.rows(data), _fixtures.procs(data))


def keys(result: PortsResult) -> list[tuple[str, str, int, int | None]]:
    return [(x.proto, x.address, x.port, x.pid) for x in result.listeners]


def test_fixtures_are_the_same_capture() -> None:
    assert ROOT["host"]["euid"] == 0
    assert NONROOT["host"]["user"] == "nobody"
    assert ROOT["started"] == NONROOT["started"]


def test_root_sees_every_listener_sorted_by_proto_port_address() -> None:
    holder = PIDS["holder"]
    assert keys(parse(ROOT)) == [
        # The sandbox's own listener: owned by a process outside this PID namespace, so even root has no pid.
        ("tcp", "0.0.0.0", 2024, None),
        ("tcp", "127.0.0.1", 18080, PIDS["http_root"]),
        ("tcp", "127.0.0.1", 18082, PIDS["http_nobody"]),
        ("tcp", "0.0.0.0", 18083, holder),
        ("tcp", "127.0.0.1", 18086, holder),
        ("tcp6", "::1", 18081, PIDS["http_root_v6"]),
        ("tcp6", "::", 18084, holder),
        ("udp", "127.0.0.1", 18053, holder),
        ("udp6", "::1", 18054, holder),
    ]


@pytest.mark.parametrize(
    ("port", "proto", "address", "who", "process", "exe", "user"),
    [
        (18080, "tcp", "127.0.0.1", "http_root", "python3", PYENV, "root"),
        (18081, "tcp6", "::1", "http_root_v6", "python3", PYENV, "root"),
        (18082, "tcp", "127.0.0.1", "http_nobody", "python3", "/usr/bin/python3.11", "nobody"),
        (18053, "udp", "127.0.0.1", "holder", "vigil-fixture", PYENV, "root"),
        (18054, "udp6", "::1", "holder", "vigil-fixture", PYENV, "root"),
        (18084, "tcp6", "::", "holder", "vigil-fixture", PYENV, "root"),
    ],
)
def test_root_listener_has_its_owner(
    port: int, proto: str, address: str, who: str, process: str, exe: str, user: str
) -> None:
    [listener] = [x for x in parse(ROOT).listeners if x.port == port]
    assert listener == Listener(proto, address, port, PIDS[who], process, exe, user)
    assert listener.owner_known


@pytest.mark.parametrize("data", [ROOT, NONROOT], ids=["root", "nonroot"])
def test_non_listening_sockets_are_excluded(data: dict[str, Any]) -> None:
    statuses = {c["status"] for c in data["connections"]}
    assert {"ESTABLISHED", "TIME_WAIT"} <= statuses  # the fixture really holds such rows
    ports = {x.port for x in parse(data).listeners}
    assert ports == {2024, 18053, 18054, 18080, 18081, 18082, 18083, 18084, 18086}
    # A connect()ed UDP socket only takes datagrams from its peer: not a listener.
    assert NONROOT["started"]["ports"]["udp_connected"] not in ports


def test_reuseport_siblings_are_reported_once() -> None:
    raw = [c for c in ROOT["connections"] if c["laddr"] == ["127.0.0.1", 18086]]
    assert len(raw) == 2 and raw[0]["fd"] != raw[1]["fd"]
    assert [x.port for x in parse(ROOT).listeners].count(18086) == 1


def test_nonroot_never_guesses_owners() -> None:
    result = parse(NONROOT)
    known = [x for x in result.listeners if x.owner_known]
    # nobody sees only its own process behind a socket.
    assert known == [
        Listener("tcp", "127.0.0.1", 18082, PIDS["http_nobody"], "python3", "/usr/bin/python3.11", "nobody")
    ]
    unknown = [x for x in result.listeners if not x.owner_known]
    assert result.unknown_owner == len(unknown) == 8
    assert all((x.pid, x.process, x.exe, x.user) == (None, "", "", "") for x in unknown)
    assert {m.pid for m in result.to_proto().listeners if not m.owner_known} == {0}


def test_nonroot_and_root_agree_on_sockets() -> None:
    def where(result: PortsResult) -> list[tuple[str, str, int]]:
        return [(x.proto, x.address, x.port) for x in result.listeners]

    assert where(parse(NONROOT)) == where(parse(ROOT))


@pytest.mark.parametrize("data", [ROOT, NONROOT], ids=["root", "nonroot"])
def test_proto_round_trip(data: dict[str, Any]) -> None:
    result = parse(data)
    wire = ports_pb2.PortsResult.FromString(result.to_proto().SerializeToString())
    assert len(wire.listeners) == 9
    assert PortsResult.from_proto(wire) == result


def test_to_proto_fields() -> None:
    [listener] = [x for x in parse(ROOT).listeners if x.port == 18082]
    assert listener.to_proto() == ports_pb2.PortsListener(
        proto="tcp",
        address="127.0.0.1",
        port=18082,
        pid=PIDS["http_nobody"],
        process="python3",
        exe="/usr/bin/python3.11",
        user="nobody",
        owner_known=True,
    )


def test_identical_rows_dedupe_but_distinct_pids_do_not() -> None:
    # Forked workers sharing one listening socket are distinct owners and all get reported.
    row = ConnRow("AF_INET", "SOCK_STREAM", ("0.0.0.0", 80), None, "LISTEN", 10)
    result = parse_connections([row, row, row._replace(pid=11)], {10: ProcInfo("nginx", "/usr/sbin/nginx", "root")})
    assert keys(result) == [("tcp", "0.0.0.0", 80, 10), ("tcp", "0.0.0.0", 80, 11)]
    assert result.listeners[1].process == ""  # pid known, process gone before it was read
    assert result.listeners[1].owner_known


def test_other_families_and_types_are_ignored() -> None:
    rows = [
        ConnRow("AF_UNIX", "SOCK_STREAM", ("/run/x.sock", 0), None, "LISTEN", 1),
        ConnRow("AF_INET", "SOCK_RAW", ("0.0.0.0", 0), None, "NONE", 1),
        ConnRow("AF_INET", "SOCK_DGRAM", None, None, "NONE", 1),
    ]
    assert parse_connections(rows, {}).listeners == []
