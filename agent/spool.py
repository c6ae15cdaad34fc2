"""The durable on-disk spool: a result leaves it only when the controller acknowledged it.

SQLite in WAL mode with ``synchronous=FULL``: a result handed to ``put`` survives a ``kill -9`` or power
cut of the agent. Sequence numbers are assigned here, in the same transaction as the insert, so they
are monotonic across restarts and never reused within the spool's *incarnation* (a random id created
with the file: a new spool file starts again at 1 under a new incarnation, and the controller keys
replay protection on the pair).

Every payload is stored with a checksum written in the same transaction; a row whose payload does not
match it is never sent but moved to the local ``quarantine`` table, as is a report the controller
rejected. The spool is bounded; when full, new results are counted as dropped (never silently): the
task whose result was dropped is marked *dirty* (``dirty`` table) until a later result of it is spooled,
and the counts travel in heartbeats and in the ``agent`` check so the controller tickets the gap.

    reports(seq, payload, crc)          results waiting for an acknowledgement
    meta(key, value)                    integer counters: next_seq, bytes, dropped (this overflow
                                        episode), dropped_total, quarantine_bytes, quarantine_evicted
    info(key, value)                    text: the incarnation and the note saying why it began
    quarantine(id, seq, payload, reason, at)
                                        reports never to be sent: rejected, or damaged in the spool
    dirty(task_id, check_id, dropped, since, held)
                                        tasks with a dropped result not collected again yet; ``held``:
                                        the check clears it itself (fim, once it re-scanned)
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
import threading
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path

from common.files import create_owner_only

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 2**20
# The spool's page cache, in KiB. SQLite's default, 2 MiB, stays filled for the agent's lifetime once a
# backlog was drained. The spool's work touches few pages: the meta row, the end of the reports table
# where puts append, its start where sends read and acks delete. A page outside the cache is read back
# from the OS's file cache; a report larger than the cache goes to the WAL in parts before its commit
# (~1 ms of CPU per MiB, beside the commit's fsync).
CACHE_KIB = 128
# The file next to the spool that remembers the last incarnation: a data directory that has it but no
# spool.db lost its spool (deleted by hand), which the next Hello says.
INCARNATION_FILE = "spool.incarnation"
MISSING_NOTE = ("spool.db was missing (deleted?): started a new spool; results spooled before it and not "
                "delivered are lost")
# recovering: 1 from a drop until no task is dirty any more (the overflow episode is open).
_COUNTERS = ("next_seq", "bytes", "dropped", "dropped_total", "quarantine_bytes", "quarantine_evicted",
             "recovering")


def checksum(payload: bytes) -> int:
    """The payload's checksum. CRC-32 rather than a hash: it guards against accidental damage (a flipped
    bit, a torn or misdirected page write), which it detects at a fraction of SHA-256's cost on every
    put and send; it is no defence against someone who can write the file, and is not meant as one
    (they could rewrite any checksum as well)."""
    return zlib.crc32(payload)


class Spool:
    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, note: str = "") -> None:
        """Open (or create) the spool at ``path``. ``note`` says why a new incarnation began, when this
        call creates one (see :func:`open_spool`)."""
        self.path = path
        self.max_bytes = max_bytes
        # Quarantined reports are kept up to a quarter of the bound; beyond it the oldest are evicted.
        self.quarantine_max = max(max_bytes // 4, 1)
        self._lock = threading.Lock()
        # Set when an ack freed room while some task is dirty: recovery may start.
        self.room = threading.Event()
        # Set when the last dirty task became clean: the agent reports its health at once.
        self.recovered = threading.Event()
        # Called (outside the spool's lock) when either of the two was set: the agent's recovery step.
        self.on_wake: Callable[[], None] | None = None
        # Create the file owner-only before SQLite opens it, so it is never world-readable.
        create_owner_only(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            self._setup(note)
        except BaseException:
            self._db.close()
            raise
        os_mode_private(path)
        self.changed = threading.Event()
        if self._has_room_locked():  # tasks left dirty by the last run: collect them again
            self.room.set()

    def _setup(self, note: str) -> None:
        db = self._db
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")  # first: before the cache holds any page
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS reports (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL, "
                       "crc INTEGER)")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS quarantine (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                       "seq INTEGER NOT NULL, payload BLOB NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS dirty (task_id TEXT PRIMARY KEY, check_id TEXT NOT NULL, "
                       "dropped INTEGER NOT NULL, since TEXT NOT NULL, held INTEGER NOT NULL DEFAULT 0)")
            columns = {str(r[1]) for r in db.execute("PRAGMA table_info(reports)")}
            if "crc" not in columns:  # a spool of an agent before checksums: give its rows theirs
                db.execute("ALTER TABLE reports ADD COLUMN crc INTEGER")
            for seq, body in db.execute("SELECT seq, payload FROM reports WHERE crc IS NULL").fetchall():
                db.execute("UPDATE reports SET crc=? WHERE seq=?", (checksum(bytes(body)), seq))
            for key in _COUNTERS:
                db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, 1 if key == "next_seq" else 0))
            row = db.execute("SELECT value FROM info WHERE key='incarnation'").fetchone()
            if row is None:
                # A new spool, or one made by an agent before incarnations: its rows keep their
                # sequences and are delivered under this incarnation (sequences continue, so none collides).
                self.created = True
                db.execute("INSERT INTO info VALUES ('incarnation', ?)", (uuid.uuid4().hex,))
                db.execute("INSERT OR REPLACE INTO info VALUES ('note', ?)", (note,))
            else:
                self.created = False
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.incarnation = str(db.execute("SELECT value FROM info WHERE key='incarnation'").fetchone()[0])
        row = db.execute("SELECT value FROM info WHERE key='note'").fetchone()
        self.note = str(row[0]) if row else ""
        if self.created:
            remember_incarnation(self.path, self.incarnation)

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0])

    def put(self, build: Callable[[int], bytes], essential: bool = False, task_id: str = "",
            check_id: str = "") -> int | None:
        """Store the payload ``build(seq)`` under the next sequence number; None if the spool was full.

        ``essential`` payloads (the agent's own health, small) may use up to twice the bound so the
        report of a full spool can still get out. ``task_id``/``check_id`` name whose result it is: a
        dropped one marks the task dirty, a stored one makes it clean again (unless its check holds it
        dirty itself, see :meth:`hold`).
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._meta("next_seq")
                payload = build(seq)
                limit = self.max_bytes * (2 if essential else 1)
                if self._meta("bytes") + len(payload) > limit:
                    self._drop(task_id or check_id, check_id)
                    self._db.execute("COMMIT")
                    return None
                self._db.execute("INSERT INTO reports VALUES (?, ?, ?)", (seq, payload, checksum(payload)))
                self._db.execute("UPDATE meta SET value = ? WHERE key='next_seq'", (seq + 1,))
                self._db.execute("UPDATE meta SET value = value + ? WHERE key='bytes'", (len(payload),))
                cleared = 0
                if task_id or check_id:
                    cleared = self._db.execute("DELETE FROM dirty WHERE task_id=? AND held=0",
                                               (task_id or check_id,)).rowcount
                    if cleared:
                        self._settle_locked()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self.changed.set()
        if cleared and self.recovered.is_set():
            self._wake()
        return seq

    def _drop(self, task: str, check_id: str) -> None:
        # A drop after the previous episode fully recovered starts a new one: its count starts again.
        if not self._meta("recovering"):
            self._db.execute("UPDATE meta SET value = 0 WHERE key='dropped'")
            self._db.execute("UPDATE meta SET value = 1 WHERE key='recovering'")
        self._db.execute("UPDATE meta SET value = value + 1 WHERE key IN ('dropped', 'dropped_total')")
        if task:
            self._db.execute(
                "INSERT INTO dirty VALUES (?, ?, 1, ?, 0) ON CONFLICT (task_id) DO UPDATE SET dropped = dropped + 1",
                (task, check_id, _now()))

    def hold(self, task_id: str, check_id: str, dirty: bool) -> None:
        """A check that re-collects on its own (fim re-scans its dirty roots) says whether ``task_id``
        is still dirty (``True``: only a later ``hold(..., False)`` clears it) or recovered."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if dirty:
                    self._db.execute(
                        "INSERT INTO dirty VALUES (?, ?, 0, ?, 1) ON CONFLICT (task_id) DO UPDATE SET held = 1",
                        (task_id, check_id, _now()))
                    self._db.execute("UPDATE meta SET value = 1 WHERE key='recovering'")
                elif self._db.execute("DELETE FROM dirty WHERE task_id=?", (task_id,)).rowcount:
                    self._settle_locked()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if not dirty and self.recovered.is_set():
            self._wake()

    def _settle_locked(self) -> None:
        """Close the overflow episode once no task is dirty (only drops with no task keep it open)."""
        if self._db.execute("SELECT 1 FROM dirty LIMIT 1").fetchone() is None:
            self._db.execute("UPDATE meta SET value = 0 WHERE key='recovering'")
            self.recovered.set()

    def dirty(self) -> list[tuple[str, str, int, bool]]:
        """(task id, check id, dropped count, held by its check) of every dirty task."""
        with self._lock:
            rows = self._db.execute("SELECT task_id, check_id, dropped, held FROM dirty ORDER BY since").fetchall()
        return [(str(t), str(c), int(d), bool(h)) for t, c, d, h in rows]

    def pending(self, after: int = 0, limit: int = 256) -> list[tuple[int, bytes]]:
        """Up to ``limit`` results after ``after``, in order. A row whose payload does not match its
        checksum is never handed out: it goes to the quarantine, with one error line naming it."""
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT seq, payload, crc FROM reports WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
                ).fetchall()
                good = [(int(s), bytes(p)) for s, p, c in rows if c is not None and checksum(bytes(p)) == int(c)]
                if len(good) == len(rows):
                    return good
                for s, p, c in rows:
                    if c is None or checksum(bytes(p)) != int(c):
                        log.error("%s: the spooled report %d does not match its checksum (damaged on disk): it is "
                                  "not sent and was moved to the spool's quarantine", self.path, s)
                        self._quarantine_locked(int(s), "damaged in the spool: payload does not match its checksum")
                if good:
                    return good

    def quarantine(self, seq: int, reason: str) -> bool:
        """Move report ``seq`` from the queue to the quarantine (the controller rejected it); False if
        it was no longer there."""
        with self._lock:
            return self._quarantine_locked(seq, reason)

    def _quarantine_locked(self, seq: int, reason: str) -> bool:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute("SELECT payload FROM reports WHERE seq=?", (seq,)).fetchone()
            if row is None:
                self._db.execute("COMMIT")
                return False
            body = bytes(row[0])
            self._db.execute("DELETE FROM reports WHERE seq=?", (seq,))
            self._db.execute("UPDATE meta SET value = value - ? WHERE key='bytes'", (len(body),))
            self._db.execute("INSERT INTO quarantine (seq, payload, reason, at) VALUES (?, ?, ?, ?)",
                             (seq, body, reason[:2000], _now()))
            self._db.execute("UPDATE meta SET value = value + ? WHERE key='quarantine_bytes'", (len(body),))
            # Bounded: the oldest quarantined reports make room (counted), the newest is always kept.
            while self._meta("quarantine_bytes") > self.quarantine_max:
                oldest = self._db.execute(
                    "SELECT id, length(payload) FROM quarantine ORDER BY id LIMIT 1 OFFSET 0").fetchone()
                newest = self._db.execute("SELECT max(id) FROM quarantine").fetchone()[0]
                if oldest is None or oldest[0] == newest:
                    break
                self._db.execute("DELETE FROM quarantine WHERE id=?", (oldest[0],))
                self._db.execute("UPDATE meta SET value = value - ? WHERE key='quarantine_bytes'", (int(oldest[1]),))
                self._db.execute("UPDATE meta SET value = value + 1 WHERE key='quarantine_evicted'")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return True

    def quarantined(self) -> list[tuple[int, bytes, str, str]]:
        """(sequence, payload, reason, when) of every quarantined report, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT seq, payload, reason, at FROM quarantine ORDER BY id").fetchall()
        return [(int(s), bytes(p), str(r), str(a)) for s, p, r, a in rows]

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
            room = freed > 0 and self._has_room_locked()
            if room:
                self.room.set()
        if room:
            self._wake()
        return removed

    def _wake(self) -> None:
        callback = self.on_wake
        if callback is not None:
            callback()

    def _has_room_locked(self) -> bool:
        # Room to collect again: the queue is at most half full, so a re-run's results fit beside it.
        return self._meta("bytes") * 2 <= self.max_bytes and bool(
            self._db.execute("SELECT 1 FROM dirty LIMIT 1").fetchone())

    def stats(self) -> dict[str, int]:
        with self._lock:
            depth = self._db.execute("SELECT count(*) FROM reports").fetchone()[0]
            quarantined = self._db.execute("SELECT count(*) FROM quarantine").fetchone()[0]
            dirty = self._db.execute("SELECT count(*) FROM dirty").fetchone()[0]
            return {"depth": int(depth), "bytes": self._meta("bytes"), "dropped": self._meta("dropped"),
                    "next_seq": self._meta("next_seq"), "dropped_total": self._meta("dropped_total"),
                    "pending_recovery": int(dirty), "quarantined": int(quarantined),
                    "quarantine_evicted": self._meta("quarantine_evicted"), "max_bytes": self.max_bytes}

    def health(self) -> dict[str, int | str]:
        """:meth:`stats` and the incarnation: what the ``agent`` check reports."""
        return {**self.stats(), "incarnation": self.incarnation}

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def incarnation_path(path: Path) -> Path:
    return path.with_name(INCARNATION_FILE)


def remember_incarnation(path: Path, incarnation: str) -> None:
    """Keep the spool's incarnation next to it (written atomically), so its loss can be told later."""
    marker = incarnation_path(path)
    tmp = marker.with_name(marker.name + ".tmp")
    try:
        tmp.write_text(incarnation + "\n")
        tmp.replace(marker)
    except OSError as exc:
        log.warning("%s: cannot record the spool incarnation: %s", marker, exc)


def open_spool(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Spool:
    """The agent's spool at ``path``, checked before use.

    A file that fails the integrity check is moved aside (with its -wal and -shm) and a new spool is
    started; a missing file in a data directory that had a spool is told as such. Either way the new
    incarnation's note says what happened, and the Hello carries it to the controller.
    """
    from common.sqlite_integrity import inspect, move_aside

    note = ""
    had_file = path.exists()
    seen = inspect(path)  # also: no spool.db but a -wal of one (SQLite would replay it into a new file)
    reason = seen.problem
    if seen.notice is not None:
        log.warning("%s. If the agent did not stop by a crash or power loss, the last result spooled may be "
                    "lost", seen.notice)
    if reason is not None:
        aside = move_aside(path)
        note = (f"the previous spool failed its integrity check ({reason}) and was moved to {aside}: started "
                "a new spool; results spooled before it and not delivered are lost")
        log.error("%s is damaged (%s): moved it to %s; a new spool is started, results spooled in it and not "
                  "delivered are lost (the controller is told)", path, reason, aside)
    elif not had_file and incarnation_path(path).exists():
        note = MISSING_NOTE
        log.error("%s is missing although this data directory had a spool (deleted?): a new spool is started; "
                  "results spooled before it and not delivered are lost (the controller is told)", path)
    try:
        return Spool(path, max_bytes, note=note)
    except sqlite3.DatabaseError as exc:
        # Damage the check did not see (or a file it could not read): never a traceback at start.
        aside = move_aside(path)
        note = (f"the previous spool could not be opened ({exc}) and was moved to {aside}: started a new "
                "spool; results spooled before it and not delivered are lost")
        log.error("%s cannot be opened (%s): moved it to %s; a new spool is started", path, exc, aside)
        return Spool(path, max_bytes, note=note)


def os_mode_private(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists():
            os.chmod(p, 0o600)
