"""The ``fim`` check: scheduled verification (``collect``) and continuous watching (``start``)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

from checks.base import Args, Check, Context, Result, Undelivered
from checks.fim.args import FimArgs
from checks.fim.errors import FimError, FimStateError
from checks.fim.model import Detector, FimEvent, FimResult

if TYPE_CHECKING:
    from checks.fim.scan import FimEngine, ScanStats
    from checks.fim.watch import Batch, Coalescer, Watcher

log = logging.getLogger(__name__)
T = TypeVar("T")
# How often an idle session checks that its watches are alive (a deleted root stops its watch).
HEALTH_CHECK_S = 10.0
# How often a session with dirty roots looks whether the spool has room for their re-scan.
RECOVERY_POLL_S = 1.0
SPOOL_FULL = ("the agent's spool is full: changes found were not recorded and are reported by a re-scan "
              "once it has room")
# Files the background copy pass reads between two looks at the real-time queue.
_COPY_SLICE = 128
# How long a scheduled verification waits for a startup scan or rescan of the same task to finish.
_BUSY_WAIT_S = 2.0
DB_NAME = "state.db"
# A session that failed starts again after this long, doubling up to the maximum.
_RETRY_FIRST_S = 5.0
_RETRY_MAX_S = 300.0


def _state_dir(ctx: Context) -> Path:
    if ctx.state_dir is None:
        raise FimStateError(
            "the fim check keeps a local baseline and needs a state directory; the agent gives each task "
            "one under its data directory (<data>/fim/<task>), a direct caller must set Context.state_dir"
        )
    return ctx.state_dir


def size_results(engine: FimEngine, spool_stats: Callable[[], Mapping[str, int | str]] | None) -> None:
    """Cut results at an eighth of the spool's bound when that is less than the usual 2 MiB: a small
    spool then takes a re-scan's results a few at a time instead of refusing one too large for it."""
    from checks.fim.scan import BYTES_PER_RESULT

    limit = int(spool_stats().get("max_bytes", 0)) if spool_stats is not None else 0
    engine.result_bytes = min(BYTES_PER_RESULT, max(limit // 8, 4096)) if limit > 0 else BYTES_PER_RESULT


def _result(engine: FimEngine, kind: str, events: list[FimEvent], stats: ScanStats | None = None,
            notices: list[str] | None = None) -> FimResult:
    return FimResult(
        roots=list(engine.args.paths),
        events=events,
        scan_kind=kind,
        files_watched=engine.files_watched,
        files_hashed=stats.files_hashed if stats else 0,
        bytes_hashed=stats.bytes_hashed if stats else 0,
        file_cap_reached=engine.cap_reached,
        file_cap=engine.args.max_files,
        baseline_created=stats.baseline_created if stats else False,
        notices=[*(notices or []), *(stats.notices if stats else [])],
        duration_ms=stats.duration_ms if stats else 0.0,
    )


def _in_low_priority_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread of its own at low CPU/IO priority and wait for it.

    Linux lowers the priority of one thread only, and cannot raise it back without privileges, so bulk
    scans get a thread of their own and the session's thread keeps normal priority for real time.
    """
    from checks.fim.hashing import lower_priority

    box: dict[str, object] = {}

    def target() -> None:
        lower_priority(thread_only=True)
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=target, name="fim-scan", daemon=True)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


class _Shared:
    def __init__(self, engine: FimEngine) -> None:
        self.engine = engine
        self.refs = 1


class Fim(Check[FimArgs, FimResult]):
    """File integrity of the watched paths: what changed since the local baseline.

    Example result (a web shell dropped into a watched web root, seen by the watcher)::

        FimResult(roots=["/var/www/html"], scan_kind="realtime", files_watched=1843, file_cap=200000,
                  file_cap_reached=False, events=[
            FimEvent(kind=Kind.CREATED, path="/var/www/html/uploads/x.php", detected_by=Detector.REALTIME,
                     detected_at=datetime(2025, 3, 4, 9, 12, 7, tzinfo=UTC), before=None,
                     after=FileState(type="file", sha256="9f86d0...", size=31, mode=0o100644, uid=33, gid=33,
                                     mtime_ns=1741079527104883211, ctime_ns=..., inode=1319075),
                     diff="--- /dev/null\\n+++ /var/www/html/uploads/x.php\\n@@ -0,0 +1 @@\\n"
                          "+<?php system($_GET['c']); ?>\\n"),
        ])

    The first run records the baseline (``baseline_created=True``, no events). After that, events say
    what changed: CREATED, MODIFIED (content, type or symlink target; with a unified diff for text
    files up to ``diff_max_kb`` unless the path is ``nodiff``), DELETED, RENAMED, PERMISSIONS (mode,
    owner, group only). ``detected_by`` says which way saw it: REALTIME, VERIFY (scheduled stat walk),
    REHASH (the rotating re-hash: content changed though size and timestamps did not), STARTUP (changed
    while the agent was down) or OVERFLOW_RESCAN. ``file_cap_reached`` means files are NOT watched.

    ``collect`` is one scheduled verification. ``start`` keeps watching between runs: it reports what
    changed while the agent was stopped, then every change within ``coalesce_ms``, through
    ``ctx.emit``. Both need ``ctx.state_dir`` for the local baseline.
    """

    id = "fim"
    version = 1
    platforms = ("linux", "darwin", "win32")
    args_type: ClassVar[type[Args]] = FimArgs
    report_field = "fim"
    default_interval_s = 3600
    # A verification re-hashes what changed at the throughput cap: a big deployment can take minutes.
    timeout_s: ClassVar[float | None] = 3600.0

    def __init__(self, *, processes: int | None = None) -> None:
        self._processes = processes
        self._lock = threading.Lock()
        # One engine per state directory, shared by the task's session and its scheduled runs, so that
        # both see one lock and one database connection.
        self._engines: dict[Path, _Shared] = {}

    def engine(self, args: FimArgs, state_dir: Path) -> FimEngine:
        """Open (or share) the engine of ``state_dir``; give it back with :meth:`release`."""
        from checks.fim.scan import FimEngine

        with self._lock:
            entry = self._engines.get(state_dir)
            if entry is not None:
                entry.refs += 1
                return entry.engine
            engine = FimEngine(args, state_dir / DB_NAME, processes=self._processes)
            self._engines[state_dir] = _Shared(engine)
            return engine

    def release(self, state_dir: Path) -> None:
        with self._lock:
            entry = self._engines.get(state_dir)
            if entry is None:
                return
            entry.refs -= 1
            if entry.refs:
                return
            del self._engines[state_dir]
        entry.engine.close()

    def collect(self, args: FimArgs, ctx: Context) -> Iterator[FimResult]:
        from checks.fim.hashing import lower_priority

        state_dir = _state_dir(ctx)
        engine = self.engine(args, state_dir)
        try:
            if threading.current_thread() is not threading.main_thread():
                lower_priority(thread_only=True)  # the runner's thread lives for this run only
            notices, engine.open_notices = engine.open_notices, []
            deadline = time.monotonic() + _BUSY_WAIT_S
            while engine.scan_lock.locked() and time.monotonic() < deadline:
                time.sleep(0.05)
            if engine.scan_lock.locked():
                ctx.warnings.append("a startup scan or rescan of these paths is still running; verification skipped")
                yield _result(engine, "verify", [], notices=notices)
                return
            held: list[FimResult] = []

            def sink(events: list[FimEvent]) -> None:
                result = _result(engine, "verify", events)
                if ctx.emit is not None:
                    ctx.emit(result)
                else:
                    held.append(result)

            size_results(engine, ctx.spool_stats)
            was_dirty = bool(engine.dirty_roots)
            try:
                stats = engine.verify(sink) if engine.baseline_complete else engine.build_baseline(kind="verify")
            except Undelivered:
                # The roots are marked dirty: re-scanned (by the session, or the next verification)
                # once the spool has room. Nothing whose events were not queued was recorded.
                if ctx.recovery is not None:
                    ctx.recovery(True)
                ctx.warnings.append(SPOOL_FULL)
                yield _result(engine, "verify", [], notices=[*notices, SPOOL_FULL])
                return
            if was_dirty and ctx.recovery is not None:
                ctx.recovery(bool(engine.dirty_roots))
            if not self._shared(state_dir):
                # No session does the background copy pass for this task: do a bounded share of it here.
                end = time.monotonic() + 5.0
                while time.monotonic() < end and engine.fill_copies(_COPY_SLICE):
                    pass
            summary = _result(engine, stats.kind, [], stats, notices)
            if stats.skipped_by_cap:
                ctx.warnings.append(f"file cap of {args.max_files} reached: some files are not watched")
            unreadable = sum(1 for n in stats.notices if n.startswith("cannot "))
            if unreadable:
                ctx.warnings.append(f"{unreadable} paths could not be read (see the notices): changes there unknown")
            # Without an emit channel the events travel in the results themselves; the last batch
            # rides with the summary.
            if held:
                summary.events = held.pop().events
            yield from held
            yield summary
        finally:
            self.release(state_dir)

    def _shared(self, state_dir: Path) -> bool:
        with self._lock:
            entry = self._engines.get(state_dir)
            return entry is not None and entry.refs > 1

    def start(self, args: FimArgs, ctx: Context) -> FimSession:
        """Start watching: the startup scan, then real-time events, reported through ``ctx.emit``."""
        if ctx.emit is None:
            raise FimError("the fim check reports real-time changes through Context.emit, which is not set")
        session = FimSession(self, args, _state_dir(ctx), ctx.emit, spool_stats=ctx.spool_stats,
                             recovery=ctx.recovery)
        session.start()
        return session


class FimSession:
    """Continuous watching of one task: startup scan, then real-time batches, until :meth:`stop`."""

    def __init__(self, check: Fim, args: FimArgs, state_dir: Path, emit: Callable[[Result], None], *,
                 spool_stats: Callable[[], Mapping[str, int | str]] | None = None,
                 recovery: Callable[[bool], None] | None = None) -> None:
        from checks.fim.watch import Coalescer

        self.check = check
        self.args = args
        self.state_dir = state_dir
        self.emit = emit
        self.spool_stats = spool_stats
        self.recovery = recovery
        # Whether the agent was last told this task is dirty (None: not told yet).
        self._held: bool | None = None
        self.engine: FimEngine | None = None
        self.watcher: Watcher | None = None
        self.coalescer: Coalescer = Coalescer(args.coalesce_ms / 1000.0)
        # Set once the startup scan has been reported (tests and the agent wait on it).
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fim-session", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopped.set()
        self.coalescer.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def overflow(self, root: str = "") -> None:
        """What the watcher calls when the kernel dropped events (also the way tests simulate one)."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        where = f" under {root}" if root else ""
        self.coalescer.overflow(f"the kernel's event queue overflowed at {when}{where}: events were lost")

    def _sink(self, engine: FimEngine, kind: str) -> Callable[[list[FimEvent]], None]:
        return lambda events: self.emit(_result(engine, kind, events))

    def _run(self) -> None:
        from checks.fim.scan import Cancelled

        delay = _RETRY_FIRST_S
        while not self.stopped.is_set():
            engine: FimEngine | None = None
            try:
                engine = self.engine = self.check.engine(self.args, self.state_dir)
                self._watch(engine)
                return
            except Cancelled:
                return
            except Exception as exc:  # the session says that it stopped, and starts again (with a rescan)
                log.exception("fim: watching %s failed", ", ".join(self.args.paths))
                if engine is not None and not self.stopped.is_set():
                    notice = f"real-time watching stopped: {exc}; starting again in {delay:.0f}s"
                    try:
                        self._tell(_result(engine, "realtime", [], notices=[notice]))
                    except Exception:
                        log.exception("fim: could not report that watching stopped")
            finally:
                self.ready.set()
                if self.watcher is not None:
                    self.watcher.stop()
                    self.watcher = None
                if engine is not None:
                    self.check.release(self.state_dir)
                    self.engine = None
            if self.stopped.wait(delay):
                return
            delay = min(delay * 2, _RETRY_MAX_S)

    def _watch(self, engine: FimEngine) -> None:
        size_results(engine, self.spool_stats)
        notices, engine.open_notices = engine.open_notices, []
        if self.args.realtime:
            # Watch first, scan second: a change made during the startup scan is then seen by one or both.
            notices += self._start_watcher(engine)
        try:
            stats: ScanStats | None = _in_low_priority_thread(
                lambda: engine.startup(self._sink(engine, "startup"), cancel=self.stopped))
        except Undelivered:
            stats = None
            notices.append(SPOOL_FULL)
        notices += self._watch_limit_notice(engine)
        self._tell(_result(engine, stats.kind if stats else "startup", [], stats, notices))
        self._settle(engine)
        self.ready.set()
        self._loop(engine)

    def _tell(self, result: FimResult) -> None:
        """Emit a result that carries no events (a summary, a notice): if the spool cannot take it, the
        drop is counted and nothing is lost that a re-scan must find."""
        try:
            self.emit(result)
        except Undelivered:
            log.warning("fim: the spool is full; a summary of %s was dropped (counted)", ", ".join(self.args.paths))

    def _settle(self, engine: FimEngine) -> None:
        """Tell the agent whether this task still has dirty roots (only when that changed)."""
        dirty = bool(engine.dirty_roots)
        if self.recovery is not None and dirty != self._held:
            self.recovery(dirty)
        self._held = dirty

    def _has_room(self) -> bool:
        """Whether the spool has room for a re-scan's results: at most half full."""
        if self.spool_stats is None:
            return True
        stats = self.spool_stats()
        limit = int(stats.get("max_bytes", 0))
        return limit <= 0 or int(stats.get("bytes", 0)) * 2 <= limit

    def _recover(self, engine: FimEngine) -> None:
        """Re-scan the roots whose events the spool could not take, once it has room again."""
        dirty = engine.dirty_roots
        if not dirty or not self._has_room():
            return
        names = ", ".join(os.fsdecode(r) for r in dirty)
        try:
            stats = _in_low_priority_thread(lambda: engine.rescan(
                self._sink(engine, "overflow_rescan"), Detector.OVERFLOW_RESCAN, cancel=self.stopped, roots=dirty))
        except Undelivered:
            log.warning("fim: the spool is full again; %s stay dirty", names)
            self._settle(engine)
            return
        found = f"{stats.events} change{'s' if stats.events != 1 else ''} found"
        notice = (f"results of {names} were dropped while the agent's spool was full; rescanned {names}: {found}")
        log.info("fim: %s", notice)
        self._tell(_result(engine, stats.kind, [], stats, [notice]))
        self._settle(engine)

    def _loop(self, engine: FimEngine) -> None:
        copies = engine.copies_pending
        quiet = True
        while not self.stopped.is_set():
            # While roots are dirty, look at the spool every second: the re-scan starts soon after room.
            batch = self.coalescer.take(0.0 if copies else RECOVERY_POLL_S if self._held else HEALTH_CHECK_S)
            if self.stopped.is_set():
                return
            self._recover(engine)
            if batch is None:
                if copies:
                    copies = engine.fill_copies(_COPY_SLICE, cancel=self.stopped) > 0
                elif not quiet:
                    # The first quiet spell after changes: give back the SQLite pages and the heap that
                    # handling them used (a burst of changes otherwise leaves ~1 MB behind for good).
                    engine.db.shrink()
                    quiet = True
                self._health(engine)
                continue
            quiet = False
            try:
                self._handle(engine, batch)
            except Undelivered:
                log.warning("fim: the spool is full; changes under %s are re-scanned once it has room",
                            ", ".join(os.fsdecode(r) for r in engine.dirty_roots))
            self._settle(engine)

    def _handle(self, engine: FimEngine, batch: Batch) -> None:
        """One batch of changes. What lies under a dirty root is left to that root's re-scan."""
        dirty = engine.dirty_roots
        if batch.overflow:
            roots = [r for r in engine.roots if r not in dirty]
            if not roots:
                return
            stats = _in_low_priority_thread(lambda: engine.rescan(
                self._sink(engine, "overflow_rescan"), Detector.OVERFLOW_RESCAN, cancel=self.stopped, roots=roots))
            found = f"{stats.events} change{'s' if stats.events != 1 else ''} found"
            walked = ", ".join(os.fsdecode(r) for r in roots)
            notices = [f"{reason}; rescanned {walked}: {found}" for reason in batch.overflow]
            self._tell(_result(engine, stats.kind, [], stats, notices))
        elif batch.paths:
            paths = batch.paths if not dirty else [p for p in batch.paths if engine.root_for(p) not in dirty]
            if not paths:
                return
            stats = engine.reconcile(paths, self._sink(engine, "realtime"), cancel=self.stopped)
            if stats.notices:
                self._tell(_result(engine, "realtime", [], stats))

    def _start_watcher(self, engine: FimEngine) -> list[str]:
        from checks.fim.watch import Watcher

        exclude = engine.exclude
        self.watcher = Watcher(
            engine.roots, self.coalescer.add, self.overflow,
            ignore=(lambda root, path: exclude.covers(root, path)) if exclude else (lambda root, path: False),
        )
        return self.watcher.start()

    def _health(self, engine: FimEngine) -> None:
        """Restart a watch that died, or one whose root has appeared since; rescan what it missed."""
        import os

        w = self.watcher
        if w is None:
            return
        appeared = [r for r in w.unwatched if os.path.exists(r)]
        if w.alive() and not appeared:
            return
        reason = "a watched root appeared" if appeared and w.alive() else "the real-time watch stopped"
        w.stop()
        notices = self._start_watcher(engine)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        extra = f"; {'; '.join(notices)}" if notices else ""
        self.coalescer.overflow(f"{reason} at {when} (watch restarted){extra}")

    @staticmethod
    def _watch_limit_notice(engine: FimEngine) -> list[str]:
        from checks.fim.watch import inotify_watch_limit

        limit = inotify_watch_limit()
        if limit is None or not engine.args.realtime:
            return []
        dirs = engine.db.count_dirs()
        if dirs * 10 <= limit * 9:
            return []
        return [
            f"{dirs} directories are watched but fs.inotify.max_user_watches is {limit}: real time may miss "
            "some of them (scheduled verification still covers all); raise the sysctl"
        ]
