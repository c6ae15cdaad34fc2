"""The agent's local baseline: one SQLite database per task, under the agent's state directory.

    files(parent, name, st, copy)   one row per watched path; ``st`` is the record of
                                    :mod:`checks.fim.hashing`; ``copy`` says whether a copy of the
                                    content is kept for diffs (see COPY_*)
    copies(parent, name, data)      zlib-compressed content of text files up to ``diff_max_kb``, for
                                    the next diff; never for ``nodiff`` paths
    meta(key, value)                schema version, configuration fingerprint, baseline and rotation
                                    progress, whether the file cap was reached

Paths are stored as ``bytes`` split into (directory, name): verification asks for one directory's
rows at a time, so memory holds one directory, never the tree. WAL with ``synchronous=NORMAL``: a
crash of the agent loses nothing committed; a power cut may roll back the last commits, and since
events are spooled (``synchronous=FULL``) *before* the rows are committed, what is rolled back is
found and reported again after the restart rather than lost. Files are owner-only (0600), because
the copies are the content of watched files.

Every method expects the caller to hold :attr:`StateDB.lock` when it needs several calls to be
atomic; single calls take it themselves.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from checks.fim.errors import FimStateError
from checks.fim.hashing import COPY_BINARY, COPY_KEPT, COPY_NONE, COPY_PENDING

SCHEMA_VERSION = "1"
# copy column: why there is, or is not, a copy of the content:
#   COPY_NONE     too large, nodiff, diffs off, not a regular file
#   COPY_PENDING  the baseline recorded the hash; the background copy pass has not read it yet
#   COPY_KEPT     a compressed copy is in ``copies``
#   COPY_BINARY   not text: compared by hash only
__all__ = ["COPY_BINARY", "COPY_KEPT", "COPY_NONE", "COPY_PENDING", "Key", "StateDB", "subtree_bounds"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS files (parent BLOB NOT NULL, name BLOB NOT NULL, st BLOB NOT NULL, "
    "copy INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (parent, name)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS copies (parent BLOB NOT NULL, name BLOB NOT NULL, data BLOB NOT NULL, "
    "PRIMARY KEY (parent, name)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)

Key = tuple[bytes, bytes]


def _private(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists():
            os.chmod(p, 0o600)


def _trim_heap() -> None:
    """Return freed heap to the OS (glibc keeps it otherwise: ~4 MB after walking 100k files)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        pass


def subtree_bounds(directory: bytes, sep: bytes) -> tuple[bytes, bytes]:
    """[lo, hi) of the ``parent`` values strictly below ``directory``."""
    lo = directory if directory.endswith(sep) else directory + sep
    return lo, lo[:-1] + bytes([lo[-1] + 1])


class StateDB:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Owner-only before SQLite creates it, so the copies are never world-readable, not even briefly.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise FimStateError(f"{path}: cannot create the fim state database: {exc}") from exc
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # A small bounded page cache (1 MiB) and no memory map: the agent's footprint must not grow with
            # the watched tree. Verification reads each page once per run, so a bigger cache buys little.
            self._db.execute("PRAGMA cache_size=-1024")
            for stmt in _SCHEMA:
                self._db.execute(stmt)
            version = self.meta("schema")
            if version is None:
                self.set_meta("schema", SCHEMA_VERSION)
            elif version != SCHEMA_VERSION:
                raise FimStateError(f"{path}: fim state schema {version}, this agent knows {SCHEMA_VERSION}")
            self.count = int(self._db.execute("SELECT count(*) FROM files").fetchone()[0])
            self._db.execute("PRAGMA shrink_memory")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise FimStateError(f"{path}: the fim state database is damaged: {exc}") from exc
        except BaseException:
            self._db.close()
            raise
        _private(path)

    def close(self) -> None:
        with self.lock:
            self._db.close()

    def shrink(self) -> None:
        """Give memory back after a full pass over the table: an idle agent should not hold the tree's pages."""
        with self.lock:
            self._db.execute("PRAGMA shrink_memory")
        _trim_heap()

    @contextmanager
    def tx(self) -> Iterator[None]:
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- meta --------------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        with self.lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- rows --------------------------------------------------------------------------------------

    def children(self, parent: bytes) -> dict[bytes, bytes]:
        with self.lock:
            return dict(self._db.execute("SELECT name, st FROM files WHERE parent=?", (parent,)).fetchall())

    def get(self, parent: bytes, name: bytes) -> tuple[bytes, int] | None:
        with self.lock:
            row = self._db.execute("SELECT st, copy FROM files WHERE parent=? AND name=?", (parent, name)).fetchone()
        return None if row is None else (bytes(row[0]), int(row[1]))

    def put(self, parent: bytes, name: bytes, st: bytes, copy: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", (parent, name, st, copy))

    def bulk(self, on: bool) -> None:
        """While a baseline is written: no fsync (a baseline cut short is recorded again from scratch)."""
        with self.lock:
            self._db.execute(f"PRAGMA synchronous={'OFF' if on else 'NORMAL'}")
            # Few checkpoints while it is written (each copies pages that the next batch changes again):
            # one per 64 MiB of log, which bounds the log of a million-file tree, and one at the end.
            self._db.execute(f"PRAGMA wal_autocheckpoint={16384 if on else 1000}")

    def end_bulk(self, meta: dict[str, str]) -> None:
        """Make a finished baseline durable, then record ``meta`` (e.g. "baseline complete") durably.

        The rows were written without fsync; a checkpoint at ``synchronous=FULL`` moves them into the
        database file and syncs it before the meta saying they are complete is committed (and synced).
        """
        with self.lock:
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with self.tx():
                for key, value in meta.items():
                    self.set_meta(key, value)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA wal_autocheckpoint=1000")

    def put_many(self, rows: Sequence[tuple[bytes, bytes, bytes, int]]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", rows)

    def set_copy_state(self, parent: bytes, name: bytes, copy: int) -> None:
        self._db.execute("UPDATE files SET copy=? WHERE parent=? AND name=?", (copy, parent, name))

    def delete(self, parent: bytes, name: bytes) -> None:
        self._db.execute("DELETE FROM files WHERE parent=? AND name=?", (parent, name))
        self._db.execute("DELETE FROM copies WHERE parent=? AND name=?", (parent, name))

    def clear(self) -> None:
        with self.tx():
            self._db.execute("DELETE FROM files")
            self._db.execute("DELETE FROM copies")
        self.count = 0

    def recount(self) -> int:
        with self.lock:
            self.count = int(self._db.execute("SELECT count(*) FROM files").fetchone()[0])
            return self.count

    def subtree(self, directory: bytes, sep: bytes, page: int = 512) -> Iterator[tuple[bytes, bytes, bytes]]:
        """Every row below ``directory`` (not its own), in pages: keyset pagination, no lock held between pages."""
        lo, hi = subtree_bounds(directory, sep)
        # Its entries (parent == directory) and everything deeper (parent in [lo, hi)) are two ranges:
        # "dir-x" sorts between "dir" and "dir/".
        for low, high in ((directory, directory + b"\x00"), (lo, hi)):
            after: Key = (low, b"")
            first = True
            while True:
                with self.lock:
                    rows = self._db.execute(
                        "SELECT parent, name, st FROM files WHERE parent >= ? AND parent < ? "
                        f"AND (parent, name) {'>=' if first else '>'} (?, ?) ORDER BY parent, name LIMIT ?",
                        (low, high, after[0], after[1], page),
                    ).fetchall()
                first = False
                for parent, name, st in rows:
                    yield bytes(parent), bytes(name), bytes(st)
                if len(rows) < page:
                    break
                after = (bytes(rows[-1][0]), bytes(rows[-1][1]))

    def key_after(self, after: Key | None, n: int) -> tuple[Key | None, bool]:
        """The ``n``-th key after ``after`` in key order, wrapping around; and whether it wrapped.

        This is the end of the rotating re-hash slice that starts after ``after``.
        """
        if n <= 0:
            return None, False
        with self.lock:
            lo = after or (b"", b"")
            op = ">" if after is not None else ">="
            row = self._db.execute(
                f"SELECT parent, name FROM files WHERE (parent, name) {op} (?, ?) ORDER BY parent, name "
                "LIMIT 1 OFFSET ?", (lo[0], lo[1], n - 1)).fetchone()
            if row is not None:
                return (bytes(row[0]), bytes(row[1])), False
            if after is None:
                return None, False
            left = self._db.execute(
                "SELECT count(*) FROM files WHERE (parent, name) > (?, ?)", (lo[0], lo[1])).fetchone()[0]
            row = self._db.execute(
                "SELECT parent, name FROM files WHERE (parent, name) <= (?, ?) ORDER BY parent, name "
                "LIMIT 1 OFFSET ?", (lo[0], lo[1], max(n - 1 - int(left), 0))).fetchone()
            return (None, False) if row is None else ((bytes(row[0]), bytes(row[1])), True)

    def pending_copies(self, after: Key | None, limit: int) -> list[tuple[bytes, bytes, bytes]]:
        with self.lock:
            rows = self._db.execute(
                "SELECT parent, name, st FROM files WHERE copy=? AND (parent, name) > (?, ?) "
                "ORDER BY parent, name LIMIT ?",
                (COPY_PENDING, *(after or (b"", b"")), limit),
            ).fetchall()
        return [(bytes(p), bytes(n), bytes(s)) for p, n, s in rows]

    def count_dirs(self) -> int:
        with self.lock:
            return int(self._db.execute("SELECT count(*) FROM files WHERE substr(st, 1, 1) = x'02'").fetchone()[0])

    def has_pending_copies(self) -> bool:
        with self.lock:
            return self._db.execute("SELECT 1 FROM files WHERE copy=? LIMIT 1", (COPY_PENDING,)).fetchone() is not None

    # -- copies ------------------------------------------------------------------------------------

    def get_copy(self, parent: bytes, name: bytes) -> bytes | None:
        with self.lock:
            row = self._db.execute("SELECT data FROM copies WHERE parent=? AND name=?", (parent, name)).fetchone()
        return None if row is None else bytes(row[0])

    def put_copy(self, parent: bytes, name: bytes, data: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO copies VALUES (?, ?, ?)", (parent, name, data))

    def delete_copy(self, parent: bytes, name: bytes) -> None:
        self._db.execute("DELETE FROM copies WHERE parent=? AND name=?", (parent, name))
