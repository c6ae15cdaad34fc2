"""``Ports.collect()`` fed the captured fixtures through a stand-in for psutil, and its metadata."""

from __future__ import annotations

import socket
from typing import Any

import psutil
import pytest
from psutil._ntuples import addr, sconn

from checks.base import Check, Context
from checks.ports import Ports, PortsArgs, PortsResult, ProcInfo, parse_connections
from checks.ports import check as ports_check
from tests.checks.ports import _fixtures


def _sconns(data: dict[str, Any]) -> list[sconn]:
    # Rebuilt as psutil returns them, enum members and all, so collect()'s own conversion is exercised.
    return [
        sconn(
            c["fd"],
            socket.AddressFamily[c["family"]],
            socket.SocketKind[c["type"]],
            addr(*c["laddr"]) if c["laddr"] else (),
            addr(*c["raddr"]) if c["raddr"] else (),
            c["status"],
            c["pid"],
        )
        for c in data["connections"]
    ]


def _collect_fixture(monkeypatch: pytest.MonkeyPatch, name: str, as_root: bool) -> tuple[PortsResult, Context]:
    data = _fixtures.raw(name)
    procs = _fixtures.procs(data)
    monkeypatch.setattr(psutil, "net_connections", lambda kind: _sconns(data))
    monkeypatch.setattr(ports_check, "_proc_info", lambda pid: procs.get(pid, ProcInfo()))
    monkeypatch.setattr(ports_check, "_is_root", lambda: as_root)
    ctx = Context()
    [result] = Ports().collect(PortsArgs(), ctx)
    return result, ctx


@pytest.mark.parametrize("name", ["linux_root.json", "linux_nonroot.json"])
def test_collect_matches_parser(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    data = _fixtures.raw(name)
    result, _ = _collect_fixture(monkeypatch, name, as_root=data["host"]["euid"] == 0)
    assert result == parse_connections(_fixtures.rows(data), _fixtures.procs(data))


def test_nonroot_warns_about_unknown_owners(monkeypatch: pytest.MonkeyPatch) -> None:
    _, ctx = _collect_fixture(monkeypatch, "linux_nonroot.json", as_root=False)
    assert ctx.warnings == ["8 listening sockets have an unknown owner: run the agent as root to see them"]


def test_root_warning_does_not_tell_root_to_become_root(monkeypatch: pytest.MonkeyPatch) -> None:
    _, ctx = _collect_fixture(monkeypatch, "linux_root.json", as_root=True)
    [warning] = ctx.warnings
    assert warning.startswith("1 listening socket has an unknown owner although the agent runs as root")


def test_unreadable_process_leaves_fields_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(self: psutil.Process) -> str:
        raise psutil.AccessDenied(self.pid)

    monkeypatch.setattr(psutil.Process, "exe", denied)
    info = ports_check._proc_info(psutil.Process().pid)
    assert info.exe == ""
    assert info.name == psutil.Process().name()


def test_vanished_process_leaves_fields_empty() -> None:
    with pytest.raises(psutil.NoSuchProcess):
        psutil.Process(2**22 + 1)  # above Linux's pid_max, so never a live process
    assert ports_check._proc_info(2**22 + 1) == ProcInfo("", "", "")


def test_metadata() -> None:
    assert (Ports.id, Ports.version, Ports.report_field, Ports.default_interval_s) == ("ports", 1, "ports", 300)
    assert Ports.platforms == ("linux", "darwin", "win32")
    assert Ports.args_type is PortsArgs
    assert Ports().runs_here("linux") and Ports().runs_here("win32") and Ports().runs_here("darwin")
    assert isinstance(Ports(), Check)
    assert Ports.__doc__ is not None and "Example result" in Ports.__doc__


def test_args_ignore_unknown_params() -> None:
    assert PortsArgs.from_params({"future_knob": 3}) == PortsArgs()
