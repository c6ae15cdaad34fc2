"""Paths to and texts of the captured fixtures (provenance of each file in ``fixtures/README.md``)."""

from __future__ import annotations

from pathlib import Path

from checks.eol import OsRelease, parse_os_release

FIXTURES = Path(__file__).parent / "fixtures"


def text(relpath: str) -> str:
    return (FIXTURES / relpath).read_text(encoding="utf-8")


def os_release(name: str) -> OsRelease:
    return parse_os_release(text(f"os-release/{name}"))


def names(kind: str) -> list[str]:
    return sorted(p.name for p in (FIXTURES / kind).iterdir())
