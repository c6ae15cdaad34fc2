"""The agent's local baseline: one SQLite database per task, under the agent's state directory.

    pages(parent, first, n, dirs, pending, data)
                                    the records of one directory in pages of up to 256 entries
                                    (layout in :mod:`checks.fim.hashing`): each watched path's
                                    ``st`` record and its ``copy`` state, saying whether a copy of
                                    the content is kept for diffs (see COPY_*); ``n``, ``dirs`` and
                                    ``pending`` count its entries, directories and pending copies
    copies(parent, name, data)      zlib-compressed content of text files up to ``diff_max_kb``, for
                                    the next diff; never for ``nodiff`` paths
    meta(key, value)                schema version, configuration fingerprint, baseline and rotation
                                    progress, whether the file cap was reached

Paths are stored as ``bytes`` split into (directory, name): verification asks for one directory's
records at a time, so memory holds one directory, never the tree. A page per SQLite row rather
than a row per path: a 100,000-file baseline writes ~800 rows. WAL with ``synchronous=NORMAL``: a
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
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import accumulate
from pathlib import Path

from checks.fim.errors import FimStateError
from checks.fim.hashing import (
    COPY_BINARY,
    COPY_KEPT,
    COPY_NONE,
    COPY_PENDING,
    PAGE_FILL,
    PAGE_MAX,
    T_DIR,
    DamagedPage,
    PageRow,
    PageView,
    decode_page,
    page_row,
    pages_of,
)
from common.files import create_owner_only

SCHEMA_VERSION = "2"  # 1: a row per path (files table); converted when opened
# copy column: why there is, or is not, a copy of the content:
#   COPY_NONE     too large, nodiff, diffs off, not a regular file
#   COPY_PENDING  the baseline recorded the hash; the background copy pass has not read it yet
#   COPY_KEPT     a compressed copy is in ``copies``
#   COPY_BINARY   not text: compared by hash only
__all__ = ["COPY_BINARY", "COPY_KEPT", "COPY_NONE", "COPY_PENDING", "Key", "StateDB", "subtree_bounds"]

_SCHEMA = (
    # A rowid table with an index rather than WITHOUT ROWID: its rows are blobs of kilobytes. The
    # counts come before the blob, so summing them never reads the blob's overflow pages.
    "CREATE TABLE IF NOT EXISTS pages (parent BLOB NOT NULL, first BLOB NOT NULL, n INTEGER NOT NULL, "
    "dirs INTEGER NOT NULL, pending INTEGER NOT NULL, data BLOB NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS pages_key ON pages (parent, first)",
    "CREATE TABLE IF NOT EXISTS copies (parent BLOB NOT NULL, name BLOB NOT NULL, data BLOB NOT NULL, "
    "PRIMARY KEY (parent, name)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)

Key = tuple[bytes, bytes]
# (parent, name, record, copy): see StateDB.apply.
Change = tuple[bytes, bytes, bytes | None, int | None]


class _Page:
    """One page being changed: its entries as lists, sorted by name."""

    __slots__ = ("copies", "dirty", "first", "names", "parent", "records", "rowid")

    def __init__(self, parent: bytes, rowid: int | None, first: bytes, names: list[bytes], records: list[bytes],
                 copies: bytearray) -> None:
        self.parent, self.rowid, self.first = parent, rowid, first
        self.names, self.records, self.copies = names, records, copies
        self.dirty = False

    def covers(self, parent: bytes, name: bytes, key: tuple[int, bytes] | None) -> bool:
        """Whether ``name`` belongs here, given the stored page that holds it (``key``)."""
        return parent == self.parent and (key[0] == self.rowid if key is not None else self.rowid is None)

    def change(self, name: bytes, record: bytes | None, copy: int | None) -> None:
        names = self.names
        i = bisect_left(names, name)
        found = i < len(names) and names[i] == name
        if copy is None:
            if found:
                del names[i], self.records[i], self.copies[i]
                self.dirty = True
        elif record is None:
            if found and self.copies[i] != copy:
                self.copies[i] = copy
                self.dirty = True
        elif found:
            self.records[i] = record
            self.copies[i] = copy
            self.dirty = True
        else:
            names.insert(i, name)
            self.records.insert(i, record)
            self.copies.insert(i, copy)
            self.dirty = True


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
            create_owner_only(path)
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
            if version == "1":
                self._convert_from_rows()
            elif version is None:
                self.set_meta("schema", SCHEMA_VERSION)
            elif version != SCHEMA_VERSION:
                raise FimStateError(f"{path}: fim state schema {version}, this agent knows {SCHEMA_VERSION}")
            self.count = int(self._db.execute("SELECT coalesce(sum(n), 0) FROM pages").fetchone()[0])
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

    def delete_meta(self, key: str) -> None:
        with self.lock:
            self._db.execute("DELETE FROM meta WHERE key=?", (key,))

    def set_meta(self, key: str, value: str) -> None:
        with self.lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

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

    # -- records, in pages ----------------------------------------------------------------------

    def _decode(self, parent: bytes, blob: bytes) -> tuple[list[bytes], list[bytes], bytearray]:
        try:
            return decode_page(blob)
        except DamagedPage as exc:
            raise self._damaged(parent, exc) from None

    def _damaged(self, parent: bytes, exc: DamagedPage) -> FimStateError:
        where = parent.decode("utf-8", "backslashreplace")
        return FimStateError(f"{self.path}: the fim state database is damaged (records of {where}: {exc})")

    def _page_key(self, parent: bytes, name: bytes) -> tuple[int, bytes] | None:
        """(rowid, first) of the page that holds ``name``, or would hold it; None if no page would."""
        row = self._db.execute(
            "SELECT rowid, first FROM pages WHERE parent=? AND first<=? ORDER BY first DESC LIMIT 1",
            (parent, name)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def _blob(self, rowid: int) -> bytes:
        return bytes(self._db.execute("SELECT data FROM pages WHERE rowid=?", (rowid,)).fetchone()[0])

    def _load(self, parent: bytes, name: bytes) -> _Page:
        """The page that holds ``name`` or would hold it, decoded; a new empty first page if none would."""
        key = self._page_key(parent, name)
        if key is None:
            return _Page(parent, None, b"", [], [], bytearray())
        return _Page(parent, key[0], key[1], *self._decode(parent, self._blob(key[0])))

    def _store(self, page: _Page) -> None:
        """Write a changed page back: deleted when empty, cut in pages of ~PAGE_FILL when past PAGE_MAX."""
        names, records, copies = page.names, page.records, page.copies
        if not names:
            if page.rowid is not None:
                self._db.execute("DELETE FROM pages WHERE rowid=?", (page.rowid,))
            return
        parts = -(-len(names) // PAGE_FILL) if len(names) > PAGE_MAX else 1
        size = -(-len(names) // parts)
        for i in range(0, len(names), size):
            row = page_row(page.first if i == 0 else names[i], names[i:i + size], records[i:i + size],
                           copies[i:i + size])
            if i == 0 and page.rowid is not None:
                self._db.execute("UPDATE pages SET n=?, dirs=?, pending=?, data=? WHERE rowid=?",
                                 (*row[1:], page.rowid))
            else:
                self._db.execute("INSERT INTO pages VALUES (?, ?, ?, ?, ?, ?)", (page.parent, *row))

    def apply(self, changes: Iterable[Change]) -> None:
        """Make many changes, each page read and written once. A change ``(parent, name, record, copy)``
        sets the record and copy state (both given), the copy state only (record None), or deletes the
        entry (copy None)."""
        with self.lock:
            page: _Page | None = None
            for parent, name, record, copy in sorted(changes, key=lambda c: (c[0], c[1])):
                if page is not None and not page.covers(parent, name, self._page_key(parent, name)):
                    if page.dirty:
                        self._store(page)
                    page = None
                if page is None:
                    page = self._load(parent, name)
                page.change(name, record, copy)
            if page is not None and page.dirty:
                self._store(page)

    def children(self, parent: bytes) -> dict[bytes, bytes]:
        with self.lock:
            blobs = self._db.execute("SELECT data FROM pages WHERE parent=? ORDER BY first", (parent,)).fetchall()
        out: dict[bytes, bytes] = {}
        for (blob,) in blobs:
            names, records, _ = self._decode(parent, blob)
            out.update(zip(names, records, strict=True))
        return out

    def get(self, parent: bytes, name: bytes) -> tuple[bytes, int] | None:
        return self.get_many([(parent, name)])[0]

    def get_many(self, keys: Iterable[Key]) -> list[tuple[bytes, int] | None]:
        """(record, copy state) of each key, or None; a page read once for the keys it holds."""
        out: list[tuple[bytes, int] | None] = []
        with self.lock:
            views: dict[int, PageView] = {}
            for parent, name in keys:
                key = self._page_key(parent, name)
                if key is None:
                    out.append(None)
                    continue
                view = views.get(key[0])
                if view is None:
                    if len(views) >= 64:
                        views.clear()
                    try:
                        view = views[key[0]] = PageView(self._blob(key[0]))
                    except DamagedPage as exc:
                        raise self._damaged(parent, exc) from None
                out.append(view.find(name))
        return out

    def put(self, parent: bytes, name: bytes, st: bytes, copy: int) -> None:
        self.apply([(parent, name, st, copy)])

    def put_pages(self, parent: bytes, pages: Sequence[PageRow]) -> None:
        """Store pages of ``parent`` as a baseline made them. A page that would overlap one already
        stored (never in a baseline recorded from scratch) is merged entry by entry instead."""
        with self.lock:
            for page in pages:
                if self._overlaps(parent, page[0], page[4]):
                    names, records, copies = self._decode(parent, page[4])
                    self.apply(zip([parent] * len(names), names, records, copies, strict=True))
                else:
                    self._db.execute("INSERT INTO pages VALUES (?, ?, ?, ?, ?, ?)", (parent, *page))

    def _overlaps(self, parent: bytes, first: bytes, blob: bytes) -> bool:
        """Whether a new page [first, its last name] meets the range of a stored page of ``parent``."""
        row = self._db.execute("SELECT first FROM pages WHERE parent=? AND first>=? ORDER BY first LIMIT 1",
                               (parent, first)).fetchone()
        if row is not None:
            names, _, _ = self._decode(parent, blob)
            if bytes(row[0]) <= names[-1]:
                return True
        below = self._db.execute("SELECT data FROM pages WHERE parent=? AND first<? ORDER BY first DESC LIMIT 1",
                                 (parent, first)).fetchone()
        if below is None:
            return False
        names, _, _ = self._decode(parent, bytes(below[0]))
        return bool(names) and names[-1] >= first

    def set_copy_state(self, parent: bytes, name: bytes, copy: int) -> None:
        self.apply([(parent, name, None, copy)])

    def delete(self, parent: bytes, name: bytes) -> None:
        with self.lock:
            self.apply([(parent, name, None, None)])
            self._db.execute("DELETE FROM copies WHERE parent=? AND name=?", (parent, name))

    def undecodable(self) -> list[bytes]:
        """The parents of stored pages that no longer decode (a damaged database SQLite cannot see)."""
        bad: list[bytes] = []
        with self.lock:
            for parent, blob in self._db.execute("SELECT parent, data FROM pages"):
                try:
                    decode_page(bytes(blob))
                except DamagedPage:
                    bad.append(bytes(parent))
            self._db.execute("PRAGMA shrink_memory")
        return bad

    def known_directories(self) -> tuple[set[bytes], set[bytes]]:
        """(every parent that has a page, every path recorded as a directory): what a rebuild compares
        against to tell a directory whose records were lost from one that is new."""
        with self.lock:
            parents = {bytes(p) for (p,) in self._db.execute("SELECT DISTINCT parent FROM pages")}
            rows = self._db.execute("SELECT parent, data FROM pages WHERE dirs > 0").fetchall()
        dirs: set[bytes] = set()
        for parent, blob in rows:
            parent = bytes(parent)
            names, records, _ = self._decode(parent, bytes(blob))
            prefix = parent if parent.endswith(os.fsencode(os.sep)) else parent + os.fsencode(os.sep)
            dirs.update(prefix + n for n, r in zip(names, records, strict=True) if r[0] == T_DIR)
        return parents, dirs

    def put_rows(self, rows: Iterable[tuple[bytes, bytes, int, int, int, bytes]]) -> None:
        """Store pages as they were read from another state database (a salvage), as they are."""
        with self.tx():
            self._db.executemany("INSERT OR IGNORE INTO pages VALUES (?, ?, ?, ?, ?, ?)", rows)

    def clear(self) -> None:
        with self.tx():
            self._db.execute("DELETE FROM pages")
            self._db.execute("DELETE FROM copies")
        self.count = 0

    def recount(self) -> int:
        with self.lock:
            self.count = int(self._db.execute("SELECT coalesce(sum(n), 0) FROM pages").fetchone()[0])
            return self.count

    def subtree(self, directory: bytes, sep: bytes, page: int = 8) -> Iterator[tuple[bytes, bytes, bytes]]:
        """Every entry below ``directory`` (not its own), in key order, ``page`` pages at a time with no
        lock held between them."""
        lo, hi = subtree_bounds(directory, sep)
        # Its entries (parent == directory) and everything deeper (parent in [lo, hi)) are two ranges:
        # "dir-x" sorts between "dir" and "dir/".
        yield from self._entries(directory, directory + b"\x00", max(page, 1))
        yield from self._entries(lo, hi, max(page, 1))

    def _entries(self, low: bytes, high: bytes, batch: int) -> Iterator[tuple[bytes, bytes, bytes]]:
        """(parent, name, record) of every entry whose parent is in [low, high), in key order."""
        after: Key | None = None
        while True:
            with self.lock:
                start, limit = (low, b""), batch
                if after is not None:
                    # From the page that holds ``after`` (one more page then): a page split since the
                    # last batch loses nothing.
                    holder = self._page_key(*after)
                    start, limit = (after[0], holder[1] if holder is not None else b""), batch + 1
                rows = self._db.execute(
                    "SELECT parent, first, data FROM pages WHERE (parent, first) >= (?, ?) AND parent < ? "
                    "ORDER BY parent, first LIMIT ?", (*start, high, limit)).fetchall()
            last = after
            for parent, _first, blob in rows:
                names, records, _ = self._decode(parent, blob)
                for name, record in zip(names, records, strict=True):
                    if after is None or (parent, name) > after:
                        yield parent, name, record
                if names:
                    last = (parent, names[-1])
            if len(rows) < limit or last == after:
                return
            after = last

    def key_after(self, after: Key | None, n: int) -> tuple[Key | None, bool]:
        """The ``n``-th key after ``after`` in key order, wrapping around; and whether it wrapped.

        This is the end of the rotating re-hash slice that starts after ``after``.
        """
        if n <= 0:
            return None, False
        with self.lock:
            index = self._db.execute("SELECT rowid, parent, first, n FROM pages ORDER BY parent, first").fetchall()
            keys = [(bytes(p), bytes(f)) for _, p, f, _ in index]
            ends = list(accumulate(int(c) for _, _, _, c in index))  # entries up to the end of each page
            total = ends[-1] if ends else 0
            done = 0  # entries at or before ``after``
            if after is not None:
                i = bisect_right(keys, after) - 1
                if i >= 0:
                    if keys[i][0] == after[0]:
                        names, _, _ = self._decode(after[0], self._blob(index[i][0]))
                        done = (ends[i - 1] if i > 0 else 0) + bisect_right(names, after[1])
                    else:
                        done = ends[i]
            target, wrapped = done + n, False
            if target > total:
                if after is None:
                    return None, False
                target, wrapped = max(target - total, 1), True
                if target > done:
                    return None, False
            i = bisect_left(ends, target)
            parent = keys[i][0]
            names, _, _ = self._decode(parent, self._blob(index[i][0]))
            return (parent, names[target - (ends[i - 1] if i > 0 else 0) - 1]), wrapped

    def pending_copies(self, after: Key | None, limit: int) -> list[tuple[bytes, bytes, bytes]]:
        out: list[tuple[bytes, bytes, bytes]] = []
        with self.lock:
            start = (b"", b"")
            if after is not None:
                holder = self._page_key(*after)
                start = (after[0], holder[1] if holder is not None else b"")
            cursor = self._db.execute(
                "SELECT parent, data FROM pages WHERE pending > 0 AND (parent, first) >= (?, ?) ORDER BY parent, first",
                start)
            for parent, blob in cursor:
                names, records, copies = self._decode(parent, blob)
                for name, record, copy in zip(names, records, copies, strict=True):
                    if copy == COPY_PENDING and (after is None or (parent, name) > after):
                        out.append((bytes(parent), name, record))
                        if len(out) >= limit:
                            cursor.close()
                            return out
        return out

    def count_dirs(self) -> int:
        with self.lock:
            return int(self._db.execute("SELECT coalesce(sum(dirs), 0) FROM pages").fetchone()[0])

    def has_pending_copies(self) -> bool:
        with self.lock:
            return self._db.execute("SELECT 1 FROM pages WHERE pending > 0 LIMIT 1").fetchone() is not None

    def _convert_from_rows(self) -> None:
        """Schema 1 kept a row per path in ``files``: move them into pages, once, keeping every record."""
        with self.tx():
            parent: bytes | None = None
            names: list[bytes] = []
            records: list[bytes] = []
            copies = bytearray()

            def flush() -> None:
                if parent is not None:
                    for page in pages_of(names, records, copies, b""):
                        self._db.execute("INSERT INTO pages VALUES (?, ?, ?, ?, ?, ?)", (parent, *page))

            for p, name, st, copy in self._db.execute("SELECT parent, name, st, copy FROM files ORDER BY parent, name"):
                if p != parent:
                    flush()
                    parent, names, records, copies = bytes(p), [], [], bytearray()
                names.append(bytes(name))
                records.append(bytes(st))
                copies.append(int(copy))
            flush()
            self._db.execute("DROP TABLE files")
            self.set_meta("schema", SCHEMA_VERSION)

    # -- copies ------------------------------------------------------------------------------------

    def get_copy(self, parent: bytes, name: bytes) -> bytes | None:
        with self.lock:
            row = self._db.execute("SELECT data FROM copies WHERE parent=? AND name=?", (parent, name)).fetchone()
        return None if row is None else bytes(row[0])

    def put_copy(self, parent: bytes, name: bytes, data: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO copies VALUES (?, ?, ?)", (parent, name, data))

    def delete_copy(self, parent: bytes, name: bytes) -> None:
        self._db.execute("DELETE FROM copies WHERE parent=? AND name=?", (parent, name))
