"""A migrated controller database in a temporary directory, for unit tests of controller modules."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from controller.storage.store import make_engine, session_factory, sqlite_url, upgrade


@contextlib.contextmanager
def migrated_sessions(data_dir: Path) -> Iterator[sessionmaker[Session]]:
    """Sessions on ``<data_dir>/controller.db`` brought to the newest schema by the Alembic migrations.

    The engine is disposed afterwards so that no SQLite connection outlives the test.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(sqlite_url(data_dir))
    try:
        upgrade(engine)
        yield session_factory(engine)
    finally:
        engine.dispose()
