"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Controller


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    """A real controller process on fresh data under ``tmp_path/controller``, stopped afterwards."""
    ctl = Controller(tmp_path / "controller")
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.stop()
