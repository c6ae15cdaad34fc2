"""fim when the spool refuses results, and when its state database is damaged: nothing is lost silently."""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checks.base import Context, Undelivered
from checks.fim import Fim, FimResult, Kind
from checks.fim.model import FimEvent
from tests.checks.fim._helpers import Collector, args, engine, write


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "www"
    write(r / "index.php", "<?php echo 'home'; ?>\n")
    write(r / "lib" / "util.php", "<?php function f() { return 1; } ?>\n")
    write(r / "img" / "a.txt", "a\n")
    write(r / "img" / "b.txt", "b\n")
    return r


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


class Refusing:
    """A sink that refuses every batch while ``full`` is set, as a full spool does."""

    def __init__(self) -> None:
        self.full = True
        self.refused = 0
        self.taken = Collector()

    def __call__(self, events: list[FimEvent]) -> None:
        if self.full:
            self.refused += 1
            raise Undelivered("spool full")
        self.taken(events)


def test_events_the_spool_refused_are_not_recorded_and_their_roots_are_rescanned(root: Path, db: Path) -> None:
    with engine(db, root) as eng:
        eng.build_baseline()
        for i in range(5):
            write(root / "new" / f"f{i}.txt", f"{i}\n")
        sink = Refusing()
        with pytest.raises(Undelivered):
            eng.verify(sink)
        assert sink.refused == 1
        assert eng.dirty_roots == [os.fsencode(root)]
    # Persisted: a restart still knows the root is dirty, and the rows were never committed.
    with engine(db, root) as eng:
        assert eng.dirty_roots == [os.fsencode(root)]
        sink.full = False
        stats = eng.rescan(sink, roots=eng.dirty_roots)
        created = {e.path for e in sink.taken.events if e.kind is Kind.CREATED}
        assert created == {str(root / "new"), *(str(root / "new" / f"f{i}.txt") for i in range(5))}
        assert stats.events == 6
        assert eng.dirty_roots == []
        again = Collector()
        eng.verify(again)
        assert again.events == []  # recorded once reported


def test_realtime_refusal_marks_only_the_roots_it_touched(tmp_path: Path, db: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write(a / "x", "1\n")
    write(b / "y", "1\n")
    with engine(db, a, b) as eng:
        eng.build_baseline()
        write(a / "x", "2\n")
        with pytest.raises(Undelivered):
            eng.reconcile([os.fsencode(a / "x")], Refusing())
        assert eng.dirty_roots == [os.fsencode(a)]


class FakeSpool:
    """What a session sees of the agent's spool: its stats (room or not) and the recovery calls."""

    def __init__(self) -> None:
        self.full = True
        self.held: list[bool] = []
        self.results: list[FimResult] = []
        self.cv = threading.Condition()

    def emit(self, result: Any) -> None:
        with self.cv:
            if self.full and result.events:
                raise Undelivered("spool full")
            self.results.append(result)
            self.cv.notify_all()

    def stats(self) -> dict[str, int | str]:
        return {"bytes": 1000 if self.full else 0, "max_bytes": 1000}

    def recovery(self, dirty: bool) -> None:
        with self.cv:
            self.held.append(dirty)
            self.cv.notify_all()

    def wait(self, what: str, cond: Any, timeout: float = 60.0) -> None:
        with self.cv:
            assert self.cv.wait_for(cond, timeout), f"timed out waiting for {what}: held={self.held}"


@pytest.fixture
def fast_health(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import checks.fim.check as check_mod

    monkeypatch.setattr(check_mod, "HEALTH_CHECK_S", 0.05)  # how often an idle session looks at the spool
    yield


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="real-time watching uses inotify here")
def test_a_session_rescans_dirty_roots_once_the_spool_has_room(root: Path, tmp_path: Path, fast_health: None) -> None:
    spool = FakeSpool()
    spool.full = False
    session = Fim().start(args(root, coalesce_ms=20), Context(state_dir=tmp_path / "state", emit=spool.emit,
                                                              spool_stats=spool.stats, recovery=spool.recovery))
    try:
        assert session.ready.wait(30)
        spool.full = True
        for i in range(30):
            write(root / "burst" / f"f{i:02d}.txt", f"{i}\n")
        spool.wait("the task to be held dirty", lambda: True in spool.held)
        assert not any(e.path.endswith("f00.txt") for r in spool.results for e in r.events)
        spool.full = False
        spool.wait("the recovery", lambda: spool.held[-1] is False and spool.held.count(True) >= 1)
        paths = {e.path for r in spool.results for e in r.events}
        assert {str(root / "burst" / f"f{i:02d}.txt") for i in range(30)} <= paths
        assert any("spool was full" in n for r in spool.results for n in r.notices)
    finally:
        session.stop()


# -- a damaged state database -------------------------------------------------------------------------


def _damage_page_of(db: Path, parent: Path) -> None:
    """Break the stored page of ``parent``'s records (the blob no longer adds up)."""
    conn = sqlite3.connect(db)
    try:
        changed = conn.execute("UPDATE pages SET data = substr(data, 1, length(data) - 3) WHERE parent = ?",
                               (os.fsencode(parent),)).rowcount
        conn.commit()
    finally:
        conn.close()
    assert changed == 1


def test_a_page_that_no_longer_decodes_is_found_at_start_and_rebuilt_around(root: Path, db: Path) -> None:
    with engine(db, root) as eng:
        eng.build_baseline()
    # Changes while the database gets damaged: in directories whose records survive, and in one lost.
    write(root / "index.php", "<?php echo 'defaced'; ?>\n")
    write(root / "img" / "c.txt", "c\n")
    write(root / "lib" / "util.php", "<?php system($_GET['c']); ?>\n")
    _damage_page_of(db, root / "lib")

    with engine(db, root) as eng:
        [notice] = [n for n in eng.open_notices if "damaged" in n]
        assert "moved to" in notice and str(db) in notice and "records of" in notice
        assert list(db.parent.glob("state.db.damaged-*"))
        assert eng.baseline_complete  # rebuilt from the records that still read, not from scratch
        sink = Collector()
        stats = eng.startup(sink)
        kinds = sink.kinds()
        assert kinds.get(str(root / "index.php")) is Kind.MODIFIED
        assert kinds.get(str(root / "img" / "c.txt")) is Kind.CREATED
        assert str(root / "lib" / "util.php") not in kinds  # its records were lost: no made-up event
        [lost] = [n for n in stats.notices if "rebuilt" in n]
        assert str(root / "lib") in lost and "1 entries" in lost
        again = Collector()
        eng.verify(again)
        assert again.events == []
        assert not any("rebuilt" in n for n in eng.verify(again).notices)


def test_a_damaged_sqlite_page_is_moved_aside_and_no_change_goes_unmentioned(tmp_path: Path, db: Path) -> None:
    root = tmp_path / "www"
    for d in range(40):
        for f in range(3):
            write(root / f"d{d:02d}" / f"f{f}.txt", f"{d}-{f}\n" * 20)
    write(root / "m-victim" / "victim-only-name.txt", "v\n")
    with engine(db, root) as eng:
        eng.build_baseline()
    assert not db.with_name("state.db-wal").exists() or db.with_name("state.db-wal").stat().st_size == 0
    data = bytearray(db.read_bytes())
    with sqlite3.connect(db) as conn:
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    page = data.index(b"victim-only-name.txt") // page_size
    data[page * page_size] = 0x77  # not a b-tree page type any more
    db.write_bytes(bytes(data))
    for d in range(40):
        write(root / f"d{d:02d}" / "f0.txt", "changed\n")

    with engine(db, root) as eng:
        [notice] = [n for n in eng.open_notices if "damaged" in n]
        assert "malformed" in notice or "quick_check" in notice or "not a database" in notice
        sink = Collector()
        stats = eng.startup(sink)
        modified = {e.path for e in sink.events if e.kind is Kind.MODIFIED}
        [lost] = [n for n in stats.notices if "rebuilt" in n]
        assert str(root / "m-victim") in lost
        for d in range(40):
            # Every change is either reported or its directory is named as having lost its records.
            assert str(root / f"d{d:02d}" / "f0.txt") in modified or str(root / f"d{d:02d}") in lost, d
        assert len(modified) >= 20  # most directories' records were read back


def test_a_damaged_header_records_a_new_baseline_and_says_so(root: Path, db: Path) -> None:
    with engine(db, root) as eng:
        eng.build_baseline()
    data = bytearray(db.read_bytes())
    data[0] ^= 0xFF
    db.write_bytes(bytes(data))
    with engine(db, root) as eng:
        [notice] = [n for n in eng.open_notices if "damaged" in n]
        assert "nothing usable could be read" in notice
        assert not eng.baseline_complete
