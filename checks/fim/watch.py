"""Real-time watching: watchdog (inotify on Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows).

Imported only when a ``fim`` task with ``realtime`` exists, so an agent without one never loads watchdog.

One recursive watch per root, which inotify implements as one watch per directory. Events are reduced
to "this path may have changed" and gathered by a :class:`Coalescer` for ``coalesce_ms``: a burst of
writes to one file becomes one comparison with the baseline, and the comparison, not the event, says
what happened.

Lost events are never silent. When the kernel's inotify queue overflows (IN_Q_OVERFLOW), watchdog 7
re-adds its watches but tells no event handler; :class:`_OverflowAwareEmitter` hooks that moment and
the session rescans the roots (``detected_by=OVERFLOW_RESCAN``, with a notice). The same happens when
more changes are queued than the coalescer holds (its memory is bounded), and when a watch dies (its
root was deleted, or the watcher thread failed).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

log = logging.getLogger(__name__)
MAX_PENDING = 50_000
_IGNORED_TYPES = frozenset({"opened", "closed_no_write"})
# What is asked of inotify: a change of content, existence, name or attributes, and nothing about
# reads (IN_OPEN, IN_ACCESS, IN_CLOSE_NOWRITE would multiply the events a busy web root produces).
_LINUX_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent, DirCreatedEvent, FileDeletedEvent, DirDeletedEvent, FileMovedEvent, DirMovedEvent,
    FileModifiedEvent, FileClosedEvent, FileAttribEvent, DirAttribEvent,
]


@dataclass
class Batch:
    """Paths that may have changed, or the reasons why everything must be rescanned."""

    paths: list[bytes] = field(default_factory=list)
    overflow: list[str] = field(default_factory=list)


class Coalescer:
    """Gathers changed paths for ``window_s`` after the first one; bounded to ``max_pending`` paths.

    The window starts at the first change and does not slide, so a writer that never pauses still
    gets its changes reported every ``window_s``.
    """

    def __init__(self, window_s: float, max_pending: int = MAX_PENDING) -> None:
        self.window_s = window_s
        self.max_pending = max_pending
        self._cv = threading.Condition()
        self._paths: dict[bytes, None] = {}
        self._overflow: list[str] = []
        self._first: float | None = None
        self._closed = False

    def add(self, paths: Iterable[bytes]) -> None:
        with self._cv:
            if self._overflow:
                return  # a rescan is due anyway and will see these
            self._paths.update(dict.fromkeys(paths))
            if len(self._paths) > self.max_pending:
                self._paths.clear()
                self._overflow.append(f"more than {self.max_pending} changed paths were queued at once")
            self._arm()

    def overflow(self, reason: str) -> None:
        with self._cv:
            self._paths.clear()
            if reason not in self._overflow:
                self._overflow.append(reason)
            self._arm()

    def _arm(self) -> None:
        if self._first is None and (self._paths or self._overflow):
            self._first = time.monotonic()
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def take(self, timeout: float | None) -> Batch | None:
        """The next batch, once its window has passed; None on timeout or when closed."""
        with self._cv:
            end = None if timeout is None else time.monotonic() + timeout
            while self._first is None and not self._closed:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cv.wait(left)
            if self._closed:
                return None
            assert self._first is not None
            due = self._first + self.window_s
            while not self._closed and (left := due - time.monotonic()) > 0:
                self._cv.wait(left)
            batch = Batch(paths=list(self._paths), overflow=self._overflow)
            self._paths = {}
            self._overflow = []
            self._first = None
            return batch


@dataclass(frozen=True)
class _Watch:
    root: bytes  # the configured root, as reported
    real: bytes  # where it points (the watch is put there)
    only: bytes | None  # a root that is a file: its directory is watched, events filtered to it


class _Handler(FileSystemEventHandler):
    def __init__(self, watch: _Watch, sink: Callable[[list[bytes]], None], ignore: Callable[[bytes, bytes], bool],
                 dir_changes: bool) -> None:
        super().__init__()
        self.watch = watch
        self.sink = sink
        self.ignore = ignore
        self.dir_changes = dir_changes

    def _map(self, path: bytes | str) -> bytes | None:
        raw = os.fsencode(path)
        w = self.watch
        if w.only is not None:
            return w.root if raw == w.only else None
        if raw == w.real:
            return w.root
        if w.real != w.root and raw.startswith(w.real + os.fsencode(os.sep)):
            raw = w.root + raw[len(w.real):]
        return None if self.ignore(w.root, raw) else raw

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type in _IGNORED_TYPES:
            return
        # inotify reports the file itself; a directory's own "modified" only says an entry came or went,
        # which the entry's own event reports. Other platforms may say no more than that.
        if event.is_directory and event.event_type == "modified" and not self.dir_changes:
            return
        out = []
        for p in (event.src_path, getattr(event, "dest_path", "")):
            if p:
                mapped = self._map(p)
                if mapped is not None:
                    out.append(mapped)
        if out:
            self.sink(out)


def _observer(on_overflow: Callable[[str], None]) -> tuple[BaseObserver, bool]:
    """An observer that reports inotify queue overflows, and whether it does (True) or not."""
    if sys.platform.startswith("linux"):
        try:
            return _overflow_aware_observer(on_overflow), True
        except (ImportError, AttributeError, TypeError) as exc:  # a watchdog whose internals differ
            log.warning("cannot hook inotify overflow reports (%s); relying on the log message", exc)
    from watchdog.observers import Observer

    return Observer(), False


def _overflow_aware_observer(on_overflow: Callable[[str], None]) -> BaseObserver:
    from watchdog.observers.api import DEFAULT_OBSERVER_TIMEOUT
    from watchdog.observers.inotify import InotifyEmitter
    from watchdog.observers.inotify_c import InotifyFD

    class _OverflowAwareEmitter(InotifyEmitter):
        """An inotify emitter that tells the session when the kernel dropped events.

        watchdog 7 handles IN_Q_OVERFLOW inside its watch group (it re-adds the recursive watches) and
        only logs it; the group's ``on_queue_overflow`` is wrapped so that the session hears of it too.
        """

        def __init__(self, *args: Any, on_overflow: Callable[[str], None], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._on_overflow = on_overflow

        def on_thread_start(self) -> None:
            super().on_thread_start()
            group = self._inotify
            if group is None:
                return
            original = group.on_queue_overflow
            path = os.fsdecode(self.watch.path)

            def hooked() -> None:
                original()
                self._on_overflow(path)

            group.on_queue_overflow = hooked  # type: ignore[method-assign]

    class _Observer(BaseObserver):
        def __init__(self) -> None:
            self.inotify_fd = InotifyFD()
            self.inotify_fd.start()
            super().__init__(_OverflowAwareEmitter, timeout=DEFAULT_OBSERVER_TIMEOUT,
                             inotify_fd=self.inotify_fd, on_overflow=on_overflow)

        def on_thread_stop(self) -> None:
            super().on_thread_stop()
            self.inotify_fd.stop()
            self.inotify_fd.join()

    return _Observer()


class _OverflowLogHandler(logging.Handler):
    """Fallback for watchdog versions without the hook: its log line is the only sign of an overflow."""

    def __init__(self, on_overflow: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.on_overflow("")


class Watcher:
    """Watches ``roots``; calls ``on_paths`` with changed paths and ``on_overflow`` when events were lost."""

    def __init__(
        self,
        roots: Sequence[bytes],
        on_paths: Callable[[list[bytes]], None],
        on_overflow: Callable[[str], None],
        ignore: Callable[[bytes, bytes], bool],
    ) -> None:
        self.roots = list(roots)
        self.on_paths = on_paths
        self.on_overflow = on_overflow
        self.ignore = ignore
        self.unwatched: list[bytes] = []
        self._observer: BaseObserver | None = None
        self._log_handler: _OverflowLogHandler | None = None

    def start(self) -> list[str]:
        """Start watching; returns notices (roots that cannot be watched, limits too low)."""
        # watchdog 7 warns when a directory created inside a new directory gets its watch twice (once
        # by the walk of the new parent, once by its own IN_CREATE); harmless, but where warnings are
        # errors it would kill the inotify reader thread.
        warnings.filterwarnings("ignore", message=r"Callback with id .* already exists", category=RuntimeWarning)
        notices: list[str] = []
        observer, hooked = _observer(self.on_overflow)
        linux = sys.platform.startswith("linux")
        for root in self.roots:
            real = os.path.realpath(root)
            only: bytes | None = None
            if not os.path.isdir(real):
                if not os.path.exists(real):
                    self.unwatched.append(root)
                    notices.append(f"{os.fsdecode(root)} does not exist: not watched in real time until it does")
                    continue
                only, real = real, os.path.dirname(real)
            watch = _Watch(root=root, real=real, only=only)
            handler = _Handler(watch, self.on_paths, self.ignore, dir_changes=not linux)
            try:
                observer.schedule(handler, os.fsdecode(real), recursive=only is None,
                                  event_filter=_LINUX_FILTER if linux else None)
            except OSError as exc:
                self.unwatched.append(root)
                notices.append(f"cannot watch {os.fsdecode(root)} in real time: {exc}; verification still covers it")
        if not hooked:
            self._log_handler = _OverflowLogHandler(self.on_overflow)
            logging.getLogger("watchdog").addHandler(self._log_handler)
        observer.start()
        self._observer = observer
        return notices

    def alive(self) -> bool:
        obs = self._observer
        if obs is None or not obs.is_alive() or not all(e.is_alive() for e in obs.emitters):
            return False
        reader = getattr(obs, "inotify_fd", None)  # the thread that reads the inotify descriptor
        return reader is None or bool(reader.is_alive())

    def stop(self) -> None:
        obs, self._observer = self._observer, None
        if obs is not None:
            obs.stop()
            if obs.is_alive():
                obs.join(10)
        if self._log_handler is not None:
            logging.getLogger("watchdog").removeHandler(self._log_handler)
            self._log_handler = None


def inotify_watch_limit() -> int | None:
    """``fs.inotify.max_user_watches`` on Linux (one watch per directory is needed), else None."""
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
