"""The one place where checks are registered. No import-for-side-effect: add the class here."""

from __future__ import annotations

from typing import Any

from checks.agent import AgentSelf
from checks.av import Av
from checks.base import Check
from checks.eol import Eol
from checks.fim import Fim
from checks.ntp import Ntp
from checks.ports import Ports

REGISTRY: tuple[type[Check[Any, Any]], ...] = (Ports, AgentSelf, Av, Eol, Ntp, Fim)


def by_id() -> dict[str, type[Check[Any, Any]]]:
    return {c.id: c for c in REGISTRY}
