"""Read the fixture files described in ``fixtures/README.md``; a typed ``approx`` for dataclass comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def read(scenario: str, command: str) -> str:
    return (FIXTURES / f"{scenario}.{command}.txt").read_text()


def approx(expected: float, abs: float | None = None) -> float:
    """``pytest.approx`` typed as the float it stands for, so it can sit in a dataclass field."""
    return cast(float, pytest.approx(expected, abs=abs))
