"""The FIM engine: one local baseline, and the three ways of comparing the tree with it.

* :meth:`FimEngine.build_baseline` records every watched path. Big trees are hashed by a pool of
  worker *processes* (threads would serialise on the GIL for small files), each with its share of
  the throughput cap and at low CPU/IO priority; the parent only lists directories and writes rows.
* :meth:`FimEngine.verify` (scheduled) and :meth:`FimEngine.rescan` (startup, after an inotify
  overflow) walk the tree with ``os.scandir`` and compare each ``lstat`` with the stored record in
  one ``bytes`` comparison; only what differs is hashed. ``verify`` also re-hashes a rotating slice
  of unchanged files, sized so that every file is re-hashed once per ``rehash_days``: that is what
  catches content changed with ``touch -r``-restored timestamps and a reset ctime.
* :meth:`FimEngine.reconcile` (real time) looks at just the paths the watcher saw change.

All of them stage changes and :meth:`_flush` them in groups: under the state lock, each staged change
is kept only if the stored row is still the one it was computed against (so a verification and the
real-time path never report the same change twice), renames are paired, the events are handed to the
sink (the agent's durable spool) and only then are the rows committed. A crash between the two
reports a change twice rather than never.

Memory stays bounded by one directory's rows, one group of staged changes (2,000 rows / 16 MiB of
content) and, for the pool, a window of tasks in flight.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

from checks.base import Undelivered
from checks.fim import diff as _diff
from checks.fim.args import FimArgs
from checks.fim.errors import FimStateError
from checks.fim.events import Staged, classify, decode, display, pair_renames
from checks.fim.globs import PathMatcher, relative
from checks.fim.hashing import (
    HEAD_SIZE,
    T_DIR,
    T_FILE,
    Described,
    RateLimiter,
    describe,
    head,
)
from checks.fim.model import Detector, FimEvent, Kind
from checks.fim.packages import DpkgPackages
from checks.fim.state import COPY_BINARY, COPY_KEPT, COPY_NONE, COPY_PENDING, Key, StateDB

if TYPE_CHECKING:
    from checks.fim.baseline import Builder
    from checks.fim.salvage import Rebuild

log = logging.getLogger(__name__)
SEP = os.fsencode(os.sep)
EVENTS_PER_RESULT = 500
BYTES_PER_RESULT = 2 * 2**20
_GROUP_ROWS = 2000
_GROUP_BYTES = 16 * 2**20
_MAX_NOTICES = 20
_SIZE = struct.Struct("<Q")

Sink = Callable[[list[FimEvent]], None]


class Cancelled(Exception):
    """The engine was asked to stop in the middle of a scan; nothing half-done was committed."""


@dataclass
class ScanStats:
    """What one scan did. ``kind`` is the ``scan_kind`` of its results."""

    kind: str
    files_hashed: int = 0
    bytes_hashed: int = 0
    events: int = 0
    skipped_by_cap: int = 0
    baseline_created: bool = False
    notices: list[str] = field(default_factory=list)
    duration_ms: float = 0.0
    _omitted: int = field(default=0, repr=False)
    _started: float = field(default_factory=time.perf_counter, repr=False)

    def notice(self, text: str) -> None:
        if len(self.notices) < _MAX_NOTICES:
            self.notices.append(text)
        else:
            self._omitted += 1

    def finish(self) -> ScanStats:
        if self._omitted:
            self.notices.append(f"... and {self._omitted} more notices like these")
            self._omitted = 0
        self.duration_ms = round((time.perf_counter() - self._started) * 1000, 3)
        return self


class _Run:
    """The state of one scan or real-time batch."""

    def __init__(self, detector: Detector, sink: Sink | None, stats: ScanStats,
                 cancel: threading.Event | None = None) -> None:
        self.detector = detector
        self.cancel = cancel
        self.sink = sink
        self.stats = stats
        self.now = dt.datetime.now(dt.UTC)
        self.staged: list[Staged] = []
        self.keys: set[Key] = set()
        self.staged_bytes = 0
        self.pending_adds = 0
        # This run's slice of the rotating re-hash: keys in (lo, hi], one or two ranges (it may wrap).
        self.rehash: list[tuple[Key, Key]] = []
        self.rehash_all = False
        # Set for the first full scan after a rebuild of the state database.
        self.rebuild: Rebuild | None = None
        # Directories whose entries are recorded without events (their records were lost).
        self.quiet: set[bytes] = set()

    def forced(self, parent: bytes, name: bytes) -> bool:
        if self.rehash_all:
            return True
        key = (parent, name)
        return any(lo < key <= hi for lo, hi in self.rehash)


def chunks(events: list[FimEvent], max_bytes: int = BYTES_PER_RESULT) -> Iterator[list[FimEvent]]:
    """Split events into report-sized lists: at most 500 events and about ``max_bytes`` (2 MiB) each."""
    out: list[FimEvent] = []
    size = 0
    for ev in events:
        cost = 400 + 2 * len(ev.path) + len(ev.diff)
        if out and (len(out) >= EVENTS_PER_RESULT or size + cost > max_bytes):
            yield out
            out, size = [], 0
        out.append(ev)
        size += cost
    if out:
        yield out


_KINDS = {Detector.STARTUP: "startup", Detector.OVERFLOW_RESCAN: "overflow_rescan", Detector.REALTIME: "realtime"}


def _key(raw: str | None) -> Key | None:
    if not raw:
        return None
    parent, _, name = raw.partition(":")
    return bytes.fromhex(parent), bytes.fromhex(name)


def _unkey(key: Key) -> str:
    return f"{key[0].hex()}:{key[1].hex()}"


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + name if parent.endswith(SEP) else parent + SEP + name


class FimEngine:
    """The baseline of one task's watched paths, in ``db_path``, and the scans that compare against it.

    Thread-safe: scans (baseline, verify, rescan) run one at a time under :attr:`scan_lock`; real-time
    :meth:`reconcile` runs alongside them, serialised on the database lock only while it commits.

    ``processes`` is the size of the hashing pool for big baselines (default: the CPU count);
    ``pool_threshold`` the number of files hashed inline before the pool is started; ``mp_start``
    overrides the multiprocessing start method; ``lower_priority`` runs the pool at nice 10 and
    best-effort I/O priority 7; ``isolate`` coordinates a big baseline from a child process (default:
    when the calling process has other threads, i.e. in the agent).
    """

    def __init__(
        self,
        args: FimArgs,
        db_path: Path,
        *,
        processes: int | None = None,
        pool_threshold: int = 2000,
        mp_start: str | None = None,
        lower_priority: bool = True,
        isolate: bool | None = None,
    ) -> None:
        if not args.paths:
            raise FimStateError("fim: no paths to watch")
        self.args = args
        self.roots = [os.fsencode(p) for p in args.paths]
        self.exclude = PathMatcher(args.exclude)
        self.nodiff = PathMatcher(args.nodiff)
        self.content_max = args.diff_max_kb * 1024
        self.limiter = RateLimiter(args.hash_rate_mb_s * 1e6) if args.hash_rate_mb_s > 0 else None
        self.processes = max(1, processes if processes is not None else (os.cpu_count() or 1))
        self.pool_threshold = pool_threshold
        self.mp_start = mp_start
        self.lower_priority = lower_priority
        self.isolate = isolate
        # Which package manager made a change (dpkg hosts); tests and tools may replace it.
        self.packages: DpkgPackages | None = DpkgPackages.for_host()
        # Platforms whose watcher reports "something changed in this directory" rather than which
        # file (FSEvents, Windows after a buffer overflow) get that directory listed again.
        self.shallow_dirs = not sys.platform.startswith("linux")
        self.scan_lock = threading.Lock()
        # The size a result of events is cut at: smaller when the spool is small, so that a re-scan's
        # results fit in it a few at a time (see FimSession).
        self.result_bytes = BYTES_PER_RESULT
        self._cancel = threading.Event()
        self.open_notices: list[str] = []
        self.db = self._open(db_path)
        self.lock = self.db.lock
        fingerprint = json.dumps({"paths": list(args.paths), "exclude": list(args.exclude),
                                  "nodiff": list(args.nodiff)}, sort_keys=True)
        stored = self.db.meta("config")
        if stored != fingerprint:
            if stored is not None:
                self.open_notices.append(
                    "the watched paths, excludes or nodiff globs changed: a new baseline is recorded"
                )
            self.db.clear()
            self.db.set_meta("config", fingerprint)
            self.db.set_meta("baseline", "0")

    def _open(self, path: Path) -> StateDB:
        """The state database, checked before use. A damaged one is moved aside (with its -wal and
        -shm) and replaced by a new one holding what could still be read from it: the next full scan
        reports the differences against those records, and records the directories whose records were
        lost as a rebuilt baseline, naming them (see :class:`checks.fim.salvage.Rebuild`)."""
        from common.sqlite_integrity import inspect

        reason = None
        try:
            seen = inspect(path)
            reason = seen.problem
            if seen.notice is not None:
                log.warning("fim: %s. Nothing is missed either way: the next scan compares the files with the "
                            "older records, so a change may be reported twice", seen.notice)
        except OSError as exc:
            raise FimStateError(f"{path}: cannot read the fim state database: {exc}") from exc
        if reason is None:
            try:
                db = StateDB(path)
            except FimStateError as exc:
                if not path.exists() or isinstance(exc.__cause__, OSError):
                    raise
                reason = str(exc)
            else:
                # Pages SQLite reads fine but whose records do not add up (a damaged write inside one).
                bad = db.undecodable()
                if not bad:
                    return db
                db.close()
                where = ", ".join(display(p) for p in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
                reason = f"the records of {where} do not decode"
        return self._rebuild_from(path, reason)

    def _rebuild_from(self, path: Path, reason: str) -> StateDB:
        from checks.fim.salvage import salvage
        from common.sqlite_integrity import move_aside

        try:
            aside = move_aside(path)
        except OSError as exc:
            raise FimStateError(f"{path}: the fim state database is damaged ({reason}) and cannot be moved "
                                f"aside: {exc}") from exc
        got = salvage(aside)
        db = StateDB(path)
        if got.rows and got.meta.get("baseline") == "1":
            db.put_rows(got.rows)
            with db.tx():
                for key, value in got.meta.items():
                    db.set_meta(key, value)
                db.set_meta("rebuild", json.dumps({"unreadable": got.unreadable,
                                                   "lost": sorted(p.hex() for p in got.lost)}))
            db.recount()
            what = (f"{len(got.rows)} pages of records could be read, {got.unreadable} could not; the next scan "
                    "reports what differs from the records read and names the directories whose records were lost")
        else:
            what = ("nothing usable could be read from it: a new baseline is recorded (changes made before it "
                    "cannot be told)")
        notice = f"the fim state database {path} was damaged ({reason}); it was moved to {aside}; {what}"
        log.error("fim: %s", notice)
        self.open_notices.append(notice)
        return db

    # -- state -------------------------------------------------------------------------------------

    @property
    def dirty_roots(self) -> list[bytes]:
        """Roots with changes whose events the spool could not take: re-scanned once it has room."""
        raw = self.db.meta("dirty_roots")
        return [r for r in (bytes.fromhex(h) for h in json.loads(raw)) if r in self.roots] if raw else []

    def mark_dirty(self, roots: Iterable[bytes]) -> None:
        with self.db.lock:
            dirty = sorted({*self.dirty_roots, *roots})
            self.db.set_meta("dirty_roots", json.dumps([r.hex() for r in dirty]))

    def clean(self, roots: Iterable[bytes]) -> None:
        """``roots`` were walked and everything found was queued: they are clean."""
        with self.db.lock:
            done = set(roots)
            dirty = self.dirty_roots
            if dirty and done & set(dirty):
                self.db.set_meta("dirty_roots", json.dumps([r.hex() for r in dirty if r not in done]))

    @contextlib.contextmanager
    def _dirty_on_drop(self, roots: list[bytes]) -> Iterator[None]:
        """Mark ``roots`` dirty (persisted) when a result of theirs could not be queued, and stop the scan."""
        try:
            yield
        except Undelivered:
            self.mark_dirty(roots)
            raise

    @property
    def baseline_complete(self) -> bool:
        return self.db.meta("baseline") == "1"

    @property
    def files_watched(self) -> int:
        return self.db.count

    @property
    def cap_reached(self) -> bool:
        return self.db.meta("cap_reached") == "1"

    def cancel(self) -> None:
        """Make a running scan stop at the next directory (nothing half-done is committed)."""
        self._cancel.set()

    def close(self) -> None:
        self._cancel.set()
        with self.scan_lock:
            self.db.close()

    def _check_cancel(self, cancel: threading.Event | None = None) -> None:
        if self._cancel.is_set() or (cancel is not None and cancel.is_set()):
            raise Cancelled("fim scan stopped")

    def root_for(self, path: bytes) -> bytes | None:
        """The watched root ``path`` lies under (or is), None if none."""
        return self._root_for(path)

    def _root_for(self, path: bytes) -> bytes | None:
        for root in self.roots:
            if path == root or path.startswith(root + SEP):
                return root
        return None

    def _room(self, run: _Run) -> bool:
        return self.db.count + run.pending_adds < self.args.max_files

    def _set_cap(self, stats: ScanStats, *, full: bool) -> None:
        if stats.skipped_by_cap:
            self.db.set_meta("cap_reached", "1")
            stats.notice(
                f"file cap of {self.args.max_files} reached: at least {stats.skipped_by_cap} paths are NOT "
                "watched; raise max_files or exclude what need not be watched"
            )
        elif full:
            self.db.set_meta("cap_reached", "0")

    # -- baseline ----------------------------------------------------------------------------------

    def startup(self, sink: Sink | None, *, cancel: threading.Event | None = None) -> ScanStats:
        """What the agent runs when it starts watching: the baseline, or a rescan against it."""
        if not self.baseline_complete:
            return self.build_baseline(kind="startup", cancel=cancel)
        return self.rescan(sink, Detector.STARTUP, cancel=cancel)

    def build_baseline(self, *, kind: str = "startup", cancel: threading.Event | None = None) -> ScanStats:
        """Record every watched path (uncapped when ``hash_rate_mb_s`` is 0). Reports no events.

        ``cancel`` stops it at the next directory; the baseline then stays incomplete and the next
        start records it again from scratch. While it is written nothing is fsynced (a baseline cut
        short is recorded again anyway); the finished one is checkpointed and synced before it is
        marked complete.
        """
        from checks.fim.baseline import Builder, PoolFailed, mp_context

        with self.scan_lock:
            self._check_cancel(cancel)
            stats = ScanStats(kind, baseline_created=True)
            self.db.set_meta("baseline", "0")
            self.db.clear()
            complete = False
            self.db.bulk(True)
            try:
                b = Builder(self.db, self.roots, self.args.exclude, self.args.max_files, self.limiter,
                            lambda: self._check_cancel(cancel))
                b.add_roots()
                share = self.args.hash_rate_mb_s * 1e6 / self.processes if self.args.hash_rate_mb_s > 0 else 0.0
                # Small trees are recorded here at once: starting processes costs more than it saves.
                if not b.run_inline(self.pool_threshold if self.processes > 1 else None):
                    b.write()
                    if self._isolate():
                        b = self._build_in_child(b, share, stats, cancel)
                    else:
                        try:
                            b.run_pool(mp_context(self.mp_start), self.processes, share, self.lower_priority)
                        except PoolFailed as exc:
                            stats.notice(f"could not start hashing processes ({exc}); hashing in the agent process")
                            self.processes = 1
                            b.run_inline()
                b.write()
                p = b.p
                stats.files_hashed, stats.bytes_hashed, stats.skipped_by_cap = p.files_hashed, p.bytes_hashed, p.skipped
                for text in p.notices:
                    stats.notice(text)
                now = str(time.time())
                self.db.end_bulk({"baseline_at": now, "last_verify_at": now, "baseline": "1", "dirty_roots": "[]"})
                complete = True
            finally:
                if not complete:
                    self.db.bulk(False)
            self.db.recount()
            self._set_cap(stats, full=True)
            self.db.shrink()
            return stats.finish()

    def _isolate(self) -> bool:
        if self.isolate is not None:
            return self.isolate
        # In the multi-threaded agent the build runs in a process of its own, so the long-lived agent
        # never grows with the tree; a single-threaded caller (a benchmark, a tool) coordinates itself.
        return threading.active_count() > 1

    def _build_in_child(self, b: Builder, share: float, stats: ScanStats,
                        cancel: threading.Event | None) -> Builder:
        from checks.fim.baseline import Builder, ChildJob, PoolFailed, build_in_child, mp_context

        job = ChildJob(str(self.db.path), self.roots, self.args.exclude, self.args.max_files, self.processes,
                       share, self.lower_priority, b.p)
        try:
            b.p = build_in_child(mp_context(self.mp_start or "spawn"), job, lambda: self._check_cancel(cancel))
            return b
        except Cancelled:
            raise
        except Exception as exc:
            # Whatever the child wrote is not trusted: record everything again here.
            stats.notice(f"the baseline process failed ({exc}); the baseline was recorded in the agent process")
        self.db.clear()
        b = Builder(self.db, self.roots, self.args.exclude, self.args.max_files, self.limiter,
                    lambda: self._check_cancel(cancel))
        b.add_roots()
        try:
            b.run_pool(mp_context(self.mp_start), self.processes, share, self.lower_priority)
        except PoolFailed:
            b.run_inline()
        return b

    # -- copies for diffs --------------------------------------------------------------------------

    @property
    def copies_pending(self) -> bool:
        return self.db.has_pending_copies()

    def fill_copies(self, max_files: int = 256, *, cancel: threading.Event | None = None) -> int:
        """Keep copies of text files the baseline only hashed (the background pass); returns how many were read.

        The baseline does not compress copies (that would triple its time); this pass does, a little at
        a time, and keeps a copy only if the file still has the content the baseline hashed.
        """
        cursor = _key(self.db.meta("copy_cursor"))
        rows = self.db.pending_copies(cursor, max_files)
        if not rows:
            if cursor is not None:
                self.db.set_meta("copy_cursor", "")
                # The pass read every row once: give back the page cache and the heap it used, so the
                # idle agent does not keep them.
                self.db.shrink()
            return 0
        done: list[tuple[bytes, bytes, bytes, int, bytes | None]] = []
        for parent, name, blob in rows:
            self._check_cancel(cancel)
            path = _join(parent, name)
            if self.content_max <= 0 or _SIZE.unpack_from(blob, 1)[0] > self.content_max or self._nodiff(path):
                done.append((parent, name, blob, COPY_NONE, None))  # settled without reading the file
                continue
            try:
                got = describe(path, content_max=self.content_max, limiter=self.limiter, regular_hint=True)
            except OSError:
                got = None
            if got is None or got.blob != blob:
                continue  # changed since the baseline: verification or the watcher reports and records it
            if got.content is None:
                done.append((parent, name, blob, COPY_NONE, None))
            elif _diff.is_text(got.content):
                done.append((parent, name, blob, COPY_KEPT, _diff.compress(got.content)))
            else:
                done.append((parent, name, blob, COPY_BINARY, None))
        with self.db.tx():
            now = self.db.get_many((parent, name) for parent, name, _, _, _ in done)
            settled = [d for d, row in zip(done, now, strict=True)
                       if row is not None and row[0] == d[2] and row[1] == COPY_PENDING]
            self.db.apply((parent, name, None, copy) for parent, name, _, copy, _ in settled)
            for parent, name, _, _, data in settled:
                if data is not None:
                    self.db.put_copy(parent, name, data)
            last = rows[-1]
            self.db.set_meta("copy_cursor", _unkey((last[0], last[1])))
        return len(rows)

    # -- verification ------------------------------------------------------------------------------

    def verify(self, sink: Sink | None, *, rehash_all: bool = False,
               cancel: threading.Event | None = None) -> ScanStats:
        """Scheduled verification: stat everything, hash what changed, re-hash the rotating slice.

        ``rehash_all`` re-hashes every file now instead of this run's slice of the rotation.
        """
        with self.scan_lock:
            self._check_cancel(cancel)
            stats = ScanStats("verify")
            run = _Run(Detector.VERIFY, sink, stats, cancel)
            now = time.time()
            cursor = self._plan_rehash(run, now, rehash_all)
            with self._dirty_on_drop(self.roots):
                self._full_walk(run)
                self._flush(run)
            self._end_rebuild(run)
            self.clean(self.roots)
            self.db.set_meta("last_verify_at", str(now))
            if cursor is not None:
                self.db.set_meta("rehash_cursor", _unkey(cursor))
            self._set_cap(stats, full=True)
            self.db.shrink()
            return stats.finish()

    def _plan_rehash(self, run: _Run, now: float, rehash_all: bool) -> Key | None:
        """Choose this run's slice of the rotating re-hash; returns the cursor to store after it.

        The slice is the share of all files that the time since the last verification is of
        ``rehash_days``, with the fraction carried over, so every file is re-hashed once per period
        whatever the verification interval, and the work is spread evenly instead of coming all at once.
        """
        total = self.db.count
        period = self.args.rehash_days * 86400.0
        last = float(self.db.meta("last_verify_at") or now)
        elapsed = max(now - last, 0.0)
        share = total * min(elapsed / period, 1.0) + float(self.db.meta("rehash_carry") or 0.0)
        want = int(share + 1e-9)
        self.db.set_meta("rehash_carry", repr(max(share - want, 0.0)) if want < total else "0.0")
        if rehash_all or elapsed >= period or want >= total:
            run.rehash_all = True
            return None
        if want <= 0:
            return None
        # A key range rather than a set of keys: the slice may be half a million files after a long stop.
        start = _key(self.db.meta("rehash_cursor"))
        end, wrapped = self.db.key_after(start, want)
        if end is None:
            return None
        lo = start if start is not None else (b"", b"")
        run.rehash = [(lo, end)] if not wrapped else [(lo, (b"\xff" * 8, b"")), ((b"", b""), end)]
        return end

    def rescan(self, sink: Sink | None, detector: Detector = Detector.STARTUP, *,
               cancel: threading.Event | None = None, roots: list[bytes] | None = None) -> ScanStats:
        """Walk everything (or just ``roots``) and report what differs from the baseline (startup, after
        an overflow, or for the roots left dirty by results the spool could not take)."""
        kind = _KINDS.get(detector, "verify")
        walked = self.roots if roots is None else [r for r in self.roots if r in roots]
        whole = len(walked) == len(self.roots)
        with self.scan_lock:
            self._check_cancel(cancel)
            stats = ScanStats(kind)
            run = _Run(detector, sink, stats, cancel)
            with self._dirty_on_drop(walked):
                self._full_walk(run, None if whole else walked)
                self._flush(run)
            self._end_rebuild(run)
            self.clean(walked)
            self._set_cap(stats, full=whole)
            self.db.shrink()
            return stats.finish()

    def _full_walk(self, run: _Run, roots: list[bytes] | None = None) -> None:
        raw = self.db.meta("rebuild") if roots is None else None
        if raw is not None:
            from checks.fim.salvage import Rebuild

            run.rebuild = Rebuild(self.db, json.loads(raw), self.roots)
        for root in self.roots if roots is None else roots:
            is_dir, _was_dir = self._compare_root(root, run)
            if is_dir:
                self._walk(root, root, run)

    def _end_rebuild(self, run: _Run) -> None:
        """A full scan after a rebuild completed: say what was lost, and compare normally from now on."""
        if run.rebuild is None:
            return
        text = run.rebuild.notice()
        if text:
            run.stats.notice(text)
            log.warning("fim: %s", text)
        with self.db.tx():
            self.db.delete_meta("rebuild")

    def _walk(self, root: bytes, start: bytes, run: _Run) -> None:
        stack = [start]
        while stack:
            self._check_cancel(run.cancel)
            self._compare_dir(root, stack.pop(), stack, run)

    def _compare_root(self, root: bytes, run: _Run) -> tuple[bool, bool]:
        """Compare a watched root itself; returns (it is a directory now, it was a known directory)."""
        parent, name = os.path.split(root)
        row = self.db.get(parent, name)
        old = row[0] if row else None
        was_dir = old is not None and old[0] == T_DIR
        try:
            st = os.stat(root)  # a root given as a symlink is watched where it points
        except (FileNotFoundError, NotADirectoryError):
            run.stats.notice(f"watched path {display(root)} does not exist")
            if old is not None:
                self._stage_gone(run, root, parent, name, old)
            return False, was_dir
        except OSError as exc:
            run.stats.notice(f"cannot read watched path {display(root)}: {exc.strerror}")
            return False, was_dir
        h = head(st)
        is_dir = h[0] == T_DIR
        if old is None and run.rebuild is not None and run.rebuild.unreadable:
            run.quiet.add(parent)  # the root's own record was lost with its parent's page
            run.rebuild.named[parent] = root
        if old is None and not self._room(run):
            run.stats.skipped_by_cap += 1
            return False, was_dir
        forced = run.forced(parent, name)
        if old is None or old[:HEAD_SIZE] != h or forced:
            if was_dir and not is_dir:
                self._stage_subtree_gone(run, root, root)
            got = self._describe(run, root, root, follow=True)
            if got is not None and got is not _UNREADABLE:
                self._stage(run, root, parent, name, old, row[1] if row else COPY_NONE, got,
                            rehash_only=old is not None and old[:HEAD_SIZE] == h)
        return is_dir, was_dir

    def _compare_dir(self, root: bytes, d: bytes, stack: list[bytes], run: _Run) -> None:
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=attrgetter("name"))
        except (FileNotFoundError, NotADirectoryError):
            return  # gone since it was listed: the pass over its parent reports that
        except OSError as exc:
            # An unreadable directory is not an empty one: its rows are kept, nothing is reported deleted.
            run.stats.notice(f"cannot list {display(d)}: {exc.strerror}; its contents were not checked")
            return
        old = self.db.children(d)
        if run.rebuild is not None and run.rebuild.is_lost(d):
            run.quiet.add(d)
        prefix = d if d.endswith(SEP) else d + SEP
        excl = self.exclude if self.exclude else None
        rel_base = relative(root, d) if excl is not None else b""
        work: list[tuple[bytes, bytes | None, bool, bool]] = []
        forced = run.forced if run.rehash_all or run.rehash else None
        # This loop is the whole cost of verifying an unchanged tree: one lstat and one bytes comparison
        # per entry, no hashing, no decoding; keep it that way.
        for e in entries:
            name = e.name
            rel = b""
            if excl is not None:
                rel = rel_base + b"/" + name if rel_base else name
                if excl.matches(rel, prefix + name):
                    continue
            o = old.pop(name, None)
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                if o is not None:
                    old[name] = o  # gone: reported with the other deletions below
                continue
            except OSError as exc:
                run.stats.notice(f"cannot stat {display(prefix + name)}: {exc.strerror}")
                continue
            h = head(st)
            code = h[0]
            if o is None:
                if not self._room(run):
                    run.stats.skipped_by_cap += 1
                    continue
                work.append((name, None, code == T_FILE, False))
            elif o[:HEAD_SIZE] != h:
                if o[0] == T_DIR and code != T_DIR:
                    self._stage_subtree_gone(run, root, prefix + name)
                work.append((name, o, code == T_FILE, False))
            elif code != T_DIR and forced is not None and forced(d, name):
                work.append((name, o, code == T_FILE, True))
            if code == T_DIR and not (excl is not None and excl.prunes(rel, prefix + name)):
                stack.append(prefix + name)
        for name, o in old.items():
            self._stage_gone(run, root, d, name, o)
        for name, o, regular, rehash_only in work:
            if o is None and not self._room(run):
                run.stats.skipped_by_cap += 1
                continue
            got = self._describe(run, root, prefix + name, regular_hint=regular)
            if got is None:
                if o is not None:
                    self._stage_gone(run, root, d, name, o)
                continue
            if got is _UNREADABLE:
                continue
            copy = COPY_NONE
            if o is not None and got.blob[0] == T_FILE:
                row = self.db.get(d, name)
                copy = row[1] if row is not None and row[0] == o else COPY_NONE
            self._stage(run, root, d, name, o, copy, got, rehash_only=rehash_only)

    # -- real time ---------------------------------------------------------------------------------

    def reconcile(self, paths: Iterable[bytes], sink: Sink | None, detector: Detector = Detector.REALTIME,
                  *, kind: str = "realtime", cancel: threading.Event | None = None) -> ScanStats:
        """Compare just ``paths`` (what the watcher saw change) with the baseline."""
        stats = ScanStats(kind)
        run = _Run(detector, sink, stats, cancel)
        wanted = sorted(set(paths))
        touched = sorted({r for r in map(self._root_for, wanted) if r is not None})
        with self._dirty_on_drop(touched):
            for p in wanted:
                self._check_cancel(cancel)
                root = self._root_for(p)
                if root is None or (self.exclude and self.exclude.covers(root, p)):
                    continue
                if p == root:
                    is_dir, was_dir = self._compare_root(root, run)
                    if is_dir and not was_dir:
                        self._walk(root, root, run)
                    continue
                self._reconcile_one(root, p, run)
            self._flush(run)
        if stats.skipped_by_cap:
            self._set_cap(stats, full=False)
        return stats.finish()

    def _reconcile_one(self, root: bytes, p: bytes, run: _Run) -> None:
        parent, name = os.path.split(p)
        if (parent, name) in run.keys:
            return  # already staged by the walk of a new directory above it
        row = self.db.get(parent, name)
        old = row[0] if row else None
        try:
            st: os.stat_result | None = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        except OSError as exc:
            run.stats.notice(f"cannot stat {display(p)}: {exc.strerror}")
            return
        if st is None:
            if old is not None:
                self._stage_gone(run, root, parent, name, old)
            return
        h = head(st)
        if old is not None and old[:HEAD_SIZE] == h:
            if h[0] == T_DIR and self.shallow_dirs:
                self._compare_dir(root, p, [], run)
            return
        if old is None and not self._room(run):
            run.stats.skipped_by_cap += 1
            return
        was_dir = old is not None and old[0] == T_DIR
        if was_dir and h[0] != T_DIR:
            self._stage_subtree_gone(run, root, p)
        got = self._describe(run, root, p, regular_hint=h[0] == T_FILE)
        if got is _UNREADABLE:
            return
        if got is None:
            if old is not None:
                self._stage_gone(run, root, parent, name, old)
            return
        self._stage(run, root, parent, name, old, row[1] if row else COPY_NONE, got)
        if got.blob[0] == T_DIR and not was_dir and not (self.exclude and self.exclude.prunes(relative(root, p), p)):
            self._walk(root, p, run)

    # -- staging and committing --------------------------------------------------------------------

    def _nodiff(self, path: bytes) -> bool:
        if not self.nodiff:
            return False
        root = self._root_for(path)
        return root is not None and self.nodiff.covers(root, path)

    def _describe(self, run: _Run, root: bytes, path: bytes, *, follow: bool = False,
                  regular_hint: bool = False) -> Described | None:
        want = self.content_max if self.content_max > 0 and not (self.nodiff and self.nodiff.covers(root, path)) else -1
        try:
            got = describe(path, content_max=want, limiter=self.limiter, follow=follow, regular_hint=regular_hint)
        except OSError as exc:
            run.stats.notice(f"cannot read {display(path)}: {exc.strerror or exc}")
            return _UNREADABLE
        if got is not None and got.blob[0] == T_FILE:
            run.stats.files_hashed += 1
            run.stats.bytes_hashed += got.nread
        return got

    def _stage_gone(self, run: _Run, root: bytes, parent: bytes, name: bytes, old: bytes) -> None:
        if old[0] == T_DIR:
            self._stage_subtree_gone(run, root, _join(parent, name))
        self._stage(run, root, parent, name, old, COPY_NONE, None)

    def _stage_subtree_gone(self, run: _Run, root: bytes, directory: bytes) -> None:
        for parent, name, blob in self.db.subtree(directory, SEP):
            self._stage(run, root, parent, name, blob, COPY_NONE, None)

    def _stage(self, run: _Run, root: bytes, parent: bytes, name: bytes, expected: bytes | None,
               expected_copy: int, got: Described | None, *, rehash_only: bool = False) -> None:
        key = (parent, name)
        if key in run.keys:
            return
        new = got.blob if got is not None else None
        if new is not None and new == expected and expected_copy != COPY_PENDING:
            return
        path = _join(parent, name)
        before = decode(expected) if expected is not None else None
        after = decode(new) if new is not None else None
        kind, fields = classify(before, after)
        if kind is not None and run.quiet and parent in run.quiet and run.rebuild is not None:
            # Its directory's records were lost: recorded as a rebuilt baseline (named in a notice).
            kind = None
            where = run.rebuild.named.get(parent, parent)
            run.rebuild.recorded[where] = run.rebuild.recorded.get(where, 0) + 1
        nodiff = bool(self.nodiff) and self.nodiff.covers(root, path)
        copy, copy_data = COPY_NONE, None
        if got is not None and new is not None and new[0] == T_FILE and self.content_max > 0 and not nodiff \
                and got.content is not None:
            if _diff.is_text(got.content):
                copy, copy_data = COPY_KEPT, _diff.compress(got.content)
            else:
                copy = COPY_BINARY
        event = None
        if kind is not None:
            detector = Detector.REHASH if rehash_only else run.detector
            event = FimEvent(kind=kind, path=display(path), detected_by=detector, detected_at=run.now,
                             before=before, after=after, changed_fields=fields)
            if after is not None and after.type == "file" and (kind is Kind.CREATED or "sha256" in fields):
                self._evidence(event, parent, name, expected_copy, got, copy, nodiff)
            if rehash_only:
                run.stats.notice(
                    f"{display(path)}: content changed although size and timestamps did not "
                    "(timestamps restored after tampering?)"
                )
        run.keys.add(key)
        run.staged.append(Staged(parent, name, expected, new, copy, copy_data, event,
                                 (new is not None) - (expected is not None)))
        run.pending_adds += (new is not None) - (expected is not None)
        run.staged_bytes += len(copy_data or b"") + (len(event.diff) if event else 0)
        if len(run.staged) >= _GROUP_ROWS or run.staged_bytes >= _GROUP_BYTES:
            self._flush(run)

    def _evidence(self, event: FimEvent, parent: bytes, name: bytes, expected_copy: int, got: Described | None,
                  copy: int, nodiff: bool) -> None:
        if nodiff:
            event.diff_omitted = "nodiff"
            return
        if got is None or got.content is None or self.content_max <= 0:
            event.diff_omitted = "too large"
            return
        if copy == COPY_BINARY:
            event.diff_omitted = "binary"
            return
        old: bytes | None = None
        if event.kind is Kind.MODIFIED:
            if expected_copy == COPY_BINARY:
                event.diff_omitted = "binary"
                return
            stored = self.db.get_copy(parent, name) if expected_copy == COPY_KEPT else None
            if stored is None:
                event.diff_omitted = "first seen"
                return
            old = _diff.decompress(stored)
        event.diff, event.diff_truncated = _diff.unified(old, got.content, event.path, self.content_max)

    def _flush(self, run: _Run) -> None:
        """Commit staged changes that still apply, after their events reached the sink."""
        if not run.staged:
            return
        with self.db.lock:
            valid: list[Staged] = []
            for s, row in zip(run.staged, self.db.get_many((s.parent, s.name) for s in run.staged), strict=True):
                if (row[0] if row else None) != s.expected:
                    continue  # changed and recorded by someone else meanwhile; they reported it
                valid.append(s)
            pair_renames(valid)
            events = [s.event for s in valid if s.event is not None]
            if events and self.packages is not None:
                self.packages.annotate(events)
            if events and run.sink is not None:
                by_event = {id(s.event): s for s in valid if s.event is not None}
                queued: list[Staged] = []
                try:
                    for chunk in chunks(events, self.result_bytes):
                        run.sink(chunk)
                        queued += (by_event[id(ev)] for ev in chunk)
                except Undelivered:
                    # Only what was queued is recorded; a re-scan of the root finds the rest again. (A
                    # rename's old path, recorded with the whole group only, may then be reported gone.)
                    self._commit(queued)
                    run.stats.events += len(queued)
                    run.staged, run.keys, run.staged_bytes, run.pending_adds = [], set(), 0, 0
                    raise
            self._commit(valid)
        run.stats.events += len(events)
        run.staged = []
        run.keys = set()
        run.staged_bytes = 0
        run.pending_adds = 0

    def _commit(self, valid: list[Staged]) -> None:
        """Record staged changes whose events (if any) were handed to the sink."""
        with self.db.lock:
            with self.db.tx():
                self.db.apply((s.parent, s.name, s.new, s.copy if s.new is not None else None) for s in valid)
                for s in valid:
                    if s.new is None:
                        self.db.delete_copy(s.parent, s.name)
                    elif s.copy_data is not None:
                        self.db.put_copy(s.parent, s.name, s.copy_data)
                    elif s.copy != COPY_PENDING:
                        self.db.delete_copy(s.parent, s.name)
            self.db.count += sum(s.adds for s in valid)


class _Unreadable(Described):
    pass


# "Exists but could not be read": keep the stored row, report nothing but a notice.
_UNREADABLE = _Unreadable(b"")

