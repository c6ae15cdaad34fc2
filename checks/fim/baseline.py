"""Recording a baseline: a walk of the watched roots shared out among hashing processes.

The walk is a queue of directories. A task is one directory (or a chunk of a big one): the process
that takes it lists it, hashes its small files with ``openat``/one ``read``/``sha256`` and gives
back its records in ready-made pages (see :mod:`checks.fim.state`) and the subdirectories to walk
next (:func:`checks.fim.hashing.run_task`). The coordinator only hands out tasks, applies the file
cap and writes the pages to SQLite in large transactions. With 100,000 small files the cost is per
file, so the coordinator does nothing per file: it handles ~800 pages.

The coordinator runs in the calling process (a benchmark, a tool) or, in the multi-threaded agent, in
a child process of its own (:func:`build_in_child`): the agent then never holds a tree's worth of
rows, pipes or heap, and the hashing processes are forked from a single-threaded parent.

No protobuf here: a coordinator child imports only this, ``hashing``, ``globs`` and ``state``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from checks.fim.globs import PathMatcher
from checks.fim.hashing import (
    COPY_NONE,
    COPY_PENDING,
    T_DIR,
    T_FILE,
    PageRow,
    RateLimiter,
    Row,
    Task,
    TaskResult,
    decode_page,
    describe,
    display_path,
    run_task,
    worker_main,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from checks.fim.state import StateDB

_SEP = os.fsencode(os.sep)
# Entries per transaction while a baseline is written (no fsync until the end, see StateDB.bulk).
BATCH_ROWS = 20_000
# Tasks a hashing process has in hand: one it works on, one waiting, so it never idles on the pipe.
_AHEAD = 6
# Tasks sent to a process in one message (each a directory or a chunk of up to 256 entries).
_PER_MESSAGE = 2


class PoolFailed(Exception):
    """The hashing processes could not be started."""


@dataclass
class Progress:
    """What a build has done so far; it travels to a coordinator child and back (plain data only)."""

    pending: collections.deque[Task] = field(default_factory=collections.deque)
    count: int = 0
    skipped: int = 0
    files_hashed: int = 0
    bytes_hashed: int = 0
    notices: list[str] = field(default_factory=list)
    capped: bool = False


class Builder:
    """One baseline build: the queue of tasks, the file cap and the rows on their way to the database."""

    def __init__(self, db: StateDB, roots: list[bytes], exclude: tuple[str, ...], max_files: int,
                 limiter: RateLimiter | None, check_cancel: Callable[[], None],
                 progress: Progress | None = None) -> None:
        self.db = db
        self.roots = roots
        self.exclude = exclude
        self.excl = PathMatcher(exclude) if exclude else None
        self.max_files = max_files
        self.limiter = limiter
        self.check_cancel = check_cancel
        self.p = progress or Progress()
        # On their way to the database: pages by directory, and single rows (the roots, and the part
        # of a directory kept when the file cap is reached), which are merged into pages one by one.
        self.pages: list[tuple[bytes, list[PageRow]]] = []
        self.rows: list[Row] = []
        self.batched = 0

    # -- the queue ---------------------------------------------------------------------------------

    def add_roots(self) -> None:
        """Record the watched roots themselves (a root given as a symlink is followed) and queue them."""
        for root in self.roots:
            self.check_cancel()
            parent, name = os.path.split(root)
            try:
                got = describe(root, follow=True)
            except OSError as exc:
                self.p.notices.append(f"cannot read watched path {display_path(root)}: {exc.strerror or exc}")
                continue
            if got is None:
                self.p.notices.append(f"watched path {display_path(root)} does not exist")
                continue
            if self.p.count >= self.max_files:
                self.p.skipped += 1
                continue
            self.p.count += 1
            kind = got.blob[0]
            self.rows.append((parent, name, got.blob, COPY_PENDING if kind == T_FILE else COPY_NONE))
            if kind == T_FILE:
                self.p.files_hashed += 1
                self.p.bytes_hashed += got.nread
            elif kind == T_DIR:
                self.p.pending.append((root, root, None))

    def consume(self, task: Task, result: TaskResult) -> None:
        """Take a task's records (up to the file cap) and queue what it found to walk next."""
        d, pages, subdirs, notices, hashed, nread, chunks = result
        p = self.p
        p.notices.extend(notices)
        root = task[0]
        room = self.max_files - p.count
        count = sum(page[1] for page in pages)
        prefix = d if d.endswith(_SEP) else d + _SEP
        if count <= room:
            self.pages.append((d, pages))
            p.count += count
            p.files_hashed += hashed
            p.bytes_hashed += nread
            p.pending.extend((root, prefix + name, None) for name in subdirs)
            p.pending.extend((root, d, chunk) for chunk in chunks)
        else:
            # The cap: keep the first entries of this directory, count the rest and everything still
            # queued (listed, not hashed) as not watched, as the report must say how many were left out.
            rows = [(d, name, record, copy) for page in pages
                    for name, record, copy in zip(*decode_page(page[4]), strict=True)]
            kept = rows[:max(room, 0)]
            self.rows.extend(kept)
            p.count += len(kept)
            p.skipped += len(rows) - len(kept) + sum(len(c) for c in chunks)
            files = [r[2] for r in kept if r[2][0] == T_FILE]
            p.files_hashed += len(files)
            p.bytes_hashed += sum(int.from_bytes(blob[1:9], "little") for blob in files)  # the record's size
            names = {r[1] for r in kept}
            p.pending.extend((root, prefix + name, None) for name in subdirs if name in names)
            p.capped = True
        self.batched += count
        if self.batched >= BATCH_ROWS:
            self.write()

    def write(self) -> None:
        if self.pages or self.rows:
            with self.db.tx():
                for parent, pages in self.pages:
                    self.db.put_pages(parent, pages)
                self.db.apply(self.rows)
            self.pages.clear()
            self.rows.clear()
        self.batched = 0

    def _count_only(self, task: Task) -> None:
        """Past the cap: a queued directory is listed, not hashed, and its entries counted as not watched."""
        root, d, entries = task
        if entries is not None:
            self.p.skipped += len(entries)
            return
        from checks.fim.hashing import _list  # the same listing and exclusion as the hashing processes

        prefix = d if d.endswith(_SEP) else d + _SEP
        with contextlib.suppress(OSError):
            self.p.skipped += len(_list(d, root, d, prefix, self.excl))

    # -- running -----------------------------------------------------------------------------------

    def run_inline(self, limit: int | None = None) -> bool:
        """Work through the queue in this process, until ``limit`` entries were recorded; True when done."""
        p = self.p
        start = p.count
        while p.pending:
            self.check_cancel()
            task = p.pending.popleft()
            if p.capped:
                self._count_only(task)
                continue
            self.consume(task, run_task(task, self.limiter, self.excl))
            if limit is not None and p.count - start >= limit and p.pending:
                return False
        return True

    def run_pool(self, ctx: Any, processes: int, share: float, lower: bool) -> None:
        """Work through the queue with ``processes`` hashing processes; raises PoolFailed if none start."""
        pool = _Pool(ctx, processes, (share, lower, self.exclude))
        p = self.p
        try:
            while True:
                self.check_cancel()
                for task in pool.orphans():
                    # Its process died (the OOM killer, a kill): the task is done here instead.
                    if p.capped:
                        self._count_only(task)
                    else:
                        self.consume(task, run_task(task, self.limiter, self.excl))
                if p.capped:
                    while p.pending:
                        self._count_only(p.pending.popleft())
                elif pool.alive:
                    pool.dispatch(p.pending)
                if pool.busy:
                    for task, result in pool.results(self.check_cancel):
                        if p.capped:
                            p.skipped += sum(page[1] for page in result[1]) + sum(len(c) for c in result[6])
                        else:
                            self.consume(task, result)
                    continue
                if pool.has_orphans:
                    continue
                if p.pending:
                    self.run_inline()  # no hashing process is left: finish here
                return
        finally:
            pool.close()


class _Pool:
    """Hashing processes, each with a pipe of its own: no queue threads in the coordinator."""

    def __init__(self, ctx: Any, n: int, initargs: tuple[Any, ...]) -> None:  # a multiprocessing context
        self.workers: list[tuple[BaseProcess, Connection, collections.deque[list[Task]]]] = []
        self._orphans: list[Task] = []
        try:
            for _ in range(n):
                mine, theirs = ctx.Pipe(duplex=True)
                proc = ctx.Process(target=worker_main, args=(theirs, *initargs), name="vigil-fim-hash", daemon=True)
                proc.start()
                theirs.close()
                self.workers.append((proc, mine, collections.deque()))
        except Exception as exc:  # no processes here (a sandbox, an unguarded __main__ under spawn)
            self.close()
            raise PoolFailed(f"{type(exc).__name__}: {exc}") from exc

    @property
    def busy(self) -> bool:
        return any(q for _, _, q in self.workers)

    @property
    def alive(self) -> bool:
        return bool(self.workers)

    def dispatch(self, pending: collections.deque[Task]) -> None:
        for w in list(self.workers):
            _, conn, q = w
            while pending and len(q) < _AHEAD:
                batch = [pending.popleft() for _ in range(min(_PER_MESSAGE, len(pending)))]
                try:
                    conn.send(batch)
                except (OSError, ValueError):
                    pending.extendleft(reversed(batch))
                    self._lost(w)
                    break
                q.append(batch)

    def results(self, check_cancel: Callable[[], None]) -> list[tuple[Task, TaskResult]]:
        from multiprocessing.connection import wait

        by_conn = {w[1]: w for w in self.workers if w[2]}
        out: list[tuple[Task, TaskResult]] = []
        ready: list[Any] = []
        while not ready:
            check_cancel()
            ready = wait(list(by_conn), timeout=1.0)
        for conn in ready:
            w = by_conn[conn]
            try:
                got: list[TaskResult] = conn.recv()
            except (EOFError, OSError):
                self._lost(w)
                continue
            out.extend(zip(w[2].popleft(), got, strict=True))
        return out

    def _lost(self, w: tuple[BaseProcess, Connection, collections.deque[list[Task]]]) -> None:
        if w in self.workers:
            self.workers.remove(w)
            for batch in w[2]:
                self._orphans.extend(batch)
            w[1].close()

    @property
    def has_orphans(self) -> bool:
        return bool(self._orphans)

    def orphans(self) -> list[Task]:
        out, self._orphans = self._orphans, []
        return out

    def close(self) -> None:
        for _proc, conn, _ in self.workers:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        for proc, conn, _ in self.workers:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()
        self.workers = []


def mp_context(method: str | None) -> Any:  # a multiprocessing context (typeshed's BaseContext lacks Process)
    import multiprocessing

    if method is None:
        # fork is cheapest, but unsafe in a process with other threads (the agent has several, and
        # gRPC's). A fork server would stay behind for the agent's lifetime; spawn costs ~0.2 s, once
        # per big baseline, and leaves nothing running.
        method = "fork" if sys.platform.startswith("linux") and threading.active_count() == 1 else "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["checks.fim.hashing"])
    return ctx


# -- a coordinator of its own -------------------------------------------------------------------------


@dataclass
class ChildJob:
    """Everything a coordinator child needs: plain data, pickled once."""

    db_path: str
    roots: list[bytes]
    exclude: tuple[str, ...]
    max_files: int
    processes: int
    share: float
    lower: bool
    progress: Progress


def _child_main(conn: Connection, job: ChildJob) -> None:
    """A coordinator child: finish the build in ``job.progress``, send back the progress or an error."""
    from pathlib import Path

    from checks.fim.state import StateDB

    parent = os.getppid()

    def orphaned() -> None:
        # The agent died (kill -9): stop, or this build would go on writing into the baseline that the
        # restarted agent records again from scratch.
        if os.getppid() != parent:
            raise SystemExit(1)

    if job.lower:
        from checks.fim.hashing import lower_priority

        lower_priority(thread_only=False)  # as the agent's scan thread that waits for it
    try:
        db = StateDB(Path(job.db_path))
        try:
            db.bulk(True)
            limiter = RateLimiter(job.share * job.processes) if job.share > 0 else None
            b = Builder(db, job.roots, job.exclude, job.max_files, limiter, orphaned, job.progress)
            try:
                b.run_pool(mp_context(None), job.processes, job.share, job.lower)
            except PoolFailed as exc:
                b.p.notices.append(f"could not start hashing processes ({exc}); hashing in one process")
                b.run_inline()
            b.write()
        finally:
            db.close()
        conn.send(("ok", b.p))
    except BaseException as exc:
        with contextlib.suppress(OSError):  # nobody to tell when the agent is gone
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def build_in_child(ctx: Any, job: ChildJob, check_cancel: Callable[[], None]) -> Progress:
    """Finish a build in a child process of its own; raises RuntimeError if it failed (nothing is trusted then)."""
    mine, theirs = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(theirs, job), name="vigil-fim-baseline", daemon=True)
    proc.start()
    theirs.close()
    try:
        while not mine.poll(0.2):
            try:
                check_cancel()
            except BaseException:
                proc.kill()
                raise
            if not proc.is_alive() and not mine.poll(0):
                raise RuntimeError(f"the baseline process exited with code {proc.exitcode}")
        try:
            status, payload = mine.recv()
        except EOFError:
            raise RuntimeError(f"the baseline process exited with code {proc.exitcode}") from None
        if status != "ok":
            raise RuntimeError(f"the baseline process failed: {payload}")
        assert isinstance(payload, Progress)
        return payload
    finally:
        mine.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
