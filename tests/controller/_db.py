"""A migrated controller database, for unit tests of controller modules."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from controller.storage.store import make_engine, session_factory, sqlite_url, upgrade


@contextlib.contextmanager
def migrated_sessions(data_dir: Path | None = None, url: str | None = None) -> Iterator[sessionmaker[Session]]:
    """Sessions on the database at ``url`` (the ``db_url`` fixture gives one per backend), or on
    ``<data_dir>/controller.db``, brought to the newest schema by the Alembic migrations.

    The engine is disposed afterwards so that no connection outlives the test.
    """
    if url is None:
        if data_dir is None:
            raise TypeError("migrated_sessions needs a data_dir or a url")
        data_dir.mkdir(parents=True, exist_ok=True)
        url = sqlite_url(data_dir)
    engine = make_engine(url)
    try:
        upgrade(engine)
        yield session_factory(engine)
    finally:
        engine.dispose()
