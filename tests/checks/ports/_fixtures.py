"""Load the JSON written by ``capture_fixture.py`` into the parser's input types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from checks.ports import ConnRow, ProcInfo

FIXTURES = Path(__file__).parent / "fixtures"


def raw(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def _addr(value: list[Any]) -> tuple[str, int] | None:
    return (value[0], value[1]) if value else None


def rows(data: dict[str, Any]) -> list[ConnRow]:
    return [
        ConnRow(
            family=c["family"],
            type=c["type"],
            laddr=_addr(c["laddr"]),
            raddr=_addr(c["raddr"]),
            status=c["status"],
            pid=c["pid"],
        )
        for c in data["connections"]
    ]


def procs(data: dict[str, Any]) -> dict[int, ProcInfo]:
    return {int(pid): ProcInfo(p["name"], p["exe"], p["username"]) for pid, p in data["processes"].items()}
