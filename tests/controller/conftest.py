"""The controller's tests that build a database run once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.storage.store import sqlite_url

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for this test: ``tmp_path/controller.db`` (where a controller with ``data_dir=tmp_path``
    keeps it by default), or a new empty PostgreSQL database (skipped, with the reason, when no PostgreSQL
    server can be had)."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    return str(request.getfixturevalue("pg_url"))
