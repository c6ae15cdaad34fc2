"""Opening a SQLite database a second time in the same process must not cost the first connection its
locks: another process closing its own connection would then delete the WAL still in use here."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.spool import Spool
from checks.fim.state import StateDB
from common.files import create_owner_only


def _another_process_opens_and_closes(db: Path) -> None:
    # Reading the schema opens the WAL; closing then checks whether this was the last connection.
    code = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('SELECT count(*) FROM sqlite_master').fetchall(); c.close()")
    subprocess.run([sys.executable, "-c", code, str(db)], check=True)


def _wal_files(db: Path) -> list[bool]:
    return [db.with_name(db.name + suffix).exists() for suffix in ("-wal", "-shm")]


def test_create_owner_only_makes_a_private_file_and_leaves_an_existing_one_alone(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    create_owner_only(db)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600 and db.stat().st_size == 0
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (i)")
    conn.commit()
    create_owner_only(db)  # as a second open in this process does
    _another_process_opens_and_closes(db)
    assert _wal_files(db) == [True, True]
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    assert sqlite3.connect(db).execute("SELECT count(*) FROM t").fetchone() == (1,)


@pytest.mark.parametrize("open_store", [
    lambda p: Spool(p, 1 << 20),
    lambda p: StateDB(p),
], ids=["agent spool", "fim state"])
def test_a_store_opened_twice_keeps_its_wal(tmp_path: Path, open_store: Callable[[Path], Any]) -> None:
    db = tmp_path / "store.db"
    first = open_store(db)
    second = open_store(db)  # e.g. a fim task's engine opened again while the old one still closes
    try:
        _another_process_opens_and_closes(db)
        assert _wal_files(db) == [True, True]
    finally:
        second.close()
        first.close()
