"""The durable on-disk spool: a result leaves it only when the controller acknowledged it.

SQLite in WAL mode with ``synchronous=FULL``: a result handed to ``put`` survives a ``kill -9`` or power
cut of the agent. Sequence numbers are assigned here, in the same transaction as the insert, so they
are monotonic across restarts and never reused. The spool is bounded; when full, new results are
counted as dropped (never silently): the count travels in heartbeats and in the ``agent`` check so the
controller tickets the gap.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from common.files import create_owner_only

DEFAULT_MAX_BYTES = 256 * 2**20
# The spool's page cache, in KiB. SQLite's default, 2 MiB, stays filled for the agent's lifetime once a
# backlog was drained. The spool's work touches few pages: the meta row, the end of the reports table
# where puts append, its start where sends read and acks delete. A page outside the cache is read back
# from the OS's file cache; a report larger than the cache goes to the WAL in parts before its commit
# (~1 ms of CPU per MiB, beside the commit's fsync).
CACHE_KIB = 128


class Spool:
    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        # Create the file owner-only before SQLite opens it, so it is never world-readable.
        create_owner_only(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")  # first: before the cache holds any page
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS reports (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        for key, value in (("next_seq", 1), ("bytes", 0), ("dropped", 0)):
            self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
        os_mode_private(path)
        self.changed = threading.Event()

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0])

    def put(self, build: Callable[[int], bytes], essential: bool = False) -> int | None:
        """Store the payload ``build(seq)`` under the next sequence number; None if the spool was full.

        ``essential`` payloads (the agent's own health, small) may use up to twice the bound so the
        report of a full spool can still get out.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._meta("next_seq")
                payload = build(seq)
                limit = self.max_bytes * (2 if essential else 1)
                if self._meta("bytes") + len(payload) > limit:
                    self._db.execute("UPDATE meta SET value = value + 1 WHERE key='dropped'")
                    self._db.execute("COMMIT")
                    return None
                self._db.execute("INSERT INTO reports VALUES (?, ?)", (seq, payload))
                self._db.execute("UPDATE meta SET value = ? WHERE key='next_seq'", (seq + 1,))
                self._db.execute("UPDATE meta SET value = value + ? WHERE key='bytes'", (len(payload),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self.changed.set()
        return seq

    def pending(self, after: int = 0, limit: int = 256) -> list[tuple[int, bytes]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, payload FROM reports WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        return [(int(s), bytes(p)) for s, p in rows]

    def ack(self, seqs: list[int]) -> int:
        """Delete acknowledged results; returns how many were still there."""
        if not seqs:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed = 0
                freed = 0
                for seq in seqs:
                    row = self._db.execute("SELECT length(payload) FROM reports WHERE seq=?", (seq,)).fetchone()
                    if row is None:
                        continue
                    self._db.execute("DELETE FROM reports WHERE seq=?", (seq,))
                    removed += 1
                    freed += int(row[0])
                self._db.execute("UPDATE meta SET value = value - ? WHERE key='bytes'", (freed,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return removed

    def stats(self) -> dict[str, int]:
        with self._lock:
            depth = self._db.execute("SELECT count(*) FROM reports").fetchone()[0]
            return {"depth": int(depth), "bytes": self._meta("bytes"), "dropped": self._meta("dropped"),
                    "next_seq": self._meta("next_seq")}

    def close(self) -> None:
        with self._lock:
            self._db.close()


def os_mode_private(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists():
            os.chmod(p, 0o600)
