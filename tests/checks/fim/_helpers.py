"""Shared pieces of the fim tests: a tree builder, engines that are always closed, event collectors."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from checks.fim.args import FimArgs
from checks.fim.model import FimEvent, FimResult, Kind
from checks.fim.scan import FimEngine


def write(path: Path, content: str | bytes = "x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(data)
    return path


def args(*paths: Path, **params: Any) -> FimArgs:
    return FimArgs.from_params({"paths": [str(p) for p in paths], **params})


@contextmanager
def engine(db: Path, *paths: Path, **params: Any) -> Iterator[FimEngine]:
    eng = FimEngine(args(*paths, **params), db)
    try:
        yield eng
    finally:
        eng.close()


class Collector:
    """A sink that remembers every event batch it was handed."""

    def __init__(self) -> None:
        self.batches: list[list[FimEvent]] = []

    def __call__(self, events: list[FimEvent]) -> None:
        self.batches.append(list(events))

    @property
    def events(self) -> list[FimEvent]:
        return [e for batch in self.batches for e in batch]

    def kinds(self) -> dict[str, Kind]:
        return {e.path: e.kind for e in self.events}


class Emitted:
    """``Context.emit`` stand-in: collects results and lets a test wait for a condition, never a fixed sleep."""

    def __init__(self) -> None:
        self.results: list[FimResult] = []
        self._cv = threading.Condition()

    def __call__(self, result: Any) -> None:
        assert isinstance(result, FimResult)
        with self._cv:
            self.results.append(result)
            self._cv.notify_all()

    @property
    def events(self) -> list[FimEvent]:
        with self._cv:
            return [e for r in self.results for e in r.events]

    def wait_for(self, what: str, cond: Callable[[list[FimResult]], bool], timeout: float = 30.0) -> float:
        """Wait until ``cond(results)``; returns the seconds waited; fails naming ``what`` at the deadline."""
        start = time.monotonic()
        deadline = start + timeout
        with self._cv:
            while not cond(self.results):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; got {len(self.results)} "
                                         f"results: {[(r.scan_kind, len(r.events), r.notices) for r in self.results]}")
                self._cv.wait(left)
        return time.monotonic() - start


def set_times(path: Path, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns))
