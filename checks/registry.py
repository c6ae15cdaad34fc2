"""The one place where checks are registered. No import-for-side-effect: add an entry here.

An entry names its check's module and class rather than importing it, so an agent imports the code
of a check only when its policy has a task for it (a host whose baseline runs two checks does not
hold the other four in memory), yet can announce every ``(check id, version)`` pair it supports at
once. ``tests/test_architecture.py`` holds each entry to the class it names.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from checks.base import Check


@dataclass(frozen=True)
class Registered:
    id: str
    version: int
    module: str
    cls: str
    # The check works between its runs (``Check.start``) and keeps per-task state on disk.
    continuous: bool = False

    def load(self) -> type[Check[Any, Any]]:
        loaded: type[Check[Any, Any]] = getattr(importlib.import_module(self.module), self.cls)
        return loaded


REGISTRY: tuple[Registered, ...] = (
    Registered("ports", 1, "checks.ports", "Ports"),
    Registered("agent", 1, "checks.agent", "AgentSelf"),
    Registered("av", 1, "checks.av", "Av"),
    Registered("eol", 1, "checks.eol", "Eol"),
    Registered("ntp", 1, "checks.ntp", "Ntp"),
    Registered("fim", 1, "checks.fim", "Fim", continuous=True),
    Registered("ssh_device", 1, "checks.ssh_device", "SshDevice"),
    Registered("netscan", 1, "checks.netscan", "Netscan"),
)


def by_id() -> dict[str, Registered]:
    return {r.id: r for r in REGISTRY}


class Checks(Mapping[str, Check[Any, Any]]):
    """Check instances by id, each imported and created the first time it is asked for."""

    def __init__(self, registry: tuple[Registered, ...] = REGISTRY) -> None:
        self._registered = {r.id: r for r in registry}
        self._made: dict[str, Check[Any, Any]] = {}

    def __getitem__(self, check_id: str) -> Check[Any, Any]:
        made = self._made.get(check_id)
        if made is None:
            made = self._made[check_id] = self._registered[check_id].load()()
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self._registered)

    def __len__(self) -> int:
        return len(self._registered)

    @property
    def capabilities(self) -> list[tuple[str, int]]:
        return [(r.id, r.version) for r in self._registered.values()]

    @property
    def continuous(self) -> set[str]:
        return {r.id for r in self._registered.values() if r.continuous}
