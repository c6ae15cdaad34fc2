"""The SQLite baseline: pages, key ranges, subtrees, rotation slices, conversion from a row per path."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from checks.fim.errors import FimStateError
from checks.fim.hashing import PAGE_MAX, pages_of
from checks.fim.state import COPY_NONE, COPY_PENDING, StateDB, subtree_bounds


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDB]:
    d = StateDB(tmp_path / "s" / "state.db")
    try:
        yield d
    finally:
        d.close()


def _fill(db: StateDB, keys: list[tuple[bytes, bytes]]) -> None:
    with db.tx():
        db.apply([(p, n, b"\x01" + bytes(44), COPY_PENDING) for p, n in keys])
    db.recount()


def test_subtree_covers_entries_and_deeper_rows_but_not_neighbours(db: StateDB) -> None:
    _fill(db, [(b"/w", b"a"), (b"/w", b"d"), (b"/w/d", b"x"), (b"/w/d/e", b"y"), (b"/w/d-x", b"z"),
               (b"/w/dd", b"q"), (b"/v", b"w")])
    got = [(p, n) for p, n, _ in db.subtree(b"/w/d", b"/")]
    assert got == [(b"/w/d", b"x"), (b"/w/d/e", b"y")]
    assert sorted((p, n) for p, n, _ in db.subtree(b"/w", b"/", page=2)) == sorted([
        (b"/w", b"a"), (b"/w", b"d"), (b"/w/d", b"x"), (b"/w/d/e", b"y"), (b"/w/d-x", b"z"), (b"/w/dd", b"q")])
    assert subtree_bounds(b"/w", b"/") == (b"/w/", b"/w0")


def test_rotation_slice_end_wraps_around(db: StateDB) -> None:
    keys = [(b"/w", bytes([97 + i])) for i in range(10)]  # a..j
    _fill(db, keys)
    assert db.key_after(None, 3) == ((b"/w", b"c"), False)
    assert db.key_after((b"/w", b"c"), 3) == ((b"/w", b"f"), False)
    assert db.key_after((b"/w", b"h"), 4) == ((b"/w", b"b"), True)  # i, j, then a, b
    assert db.key_after((b"/w", b"j"), 1) == ((b"/w", b"a"), True)
    assert db.key_after(None, 0) == (None, False)


def test_copies_and_pending(db: StateDB) -> None:
    _fill(db, [(b"/w", b"a"), (b"/w", b"b")])
    assert db.has_pending_copies()
    assert [n for _, n, _ in db.pending_copies(None, 10)] == [b"a", b"b"]
    assert [n for _, n, _ in db.pending_copies((b"/w", b"a"), 10)] == [b"b"]
    with db.tx():
        db.set_copy_state(b"/w", b"a", COPY_NONE)
        db.set_copy_state(b"/w", b"b", COPY_NONE)
        db.put_copy(b"/w", b"b", b"zz")
    assert not db.has_pending_copies() and db.get_copy(b"/w", b"b") == b"zz"
    with db.tx():
        db.delete(b"/w", b"b")
    assert db.get_copy(b"/w", b"b") is None and db.recount() == 1


def test_meta_survives_reopening(tmp_path: Path) -> None:
    first = StateDB(tmp_path / "state.db")
    first.set_meta("baseline", "1")
    first.close()
    again = StateDB(tmp_path / "state.db")
    try:
        assert again.meta("baseline") == "1" and again.meta("missing") is None
    finally:
        again.close()


def _rec(i: int, kind: int = 1) -> bytes:
    return bytes([kind]) + i.to_bytes(44, "little")


def _count_pages(db: StateDB) -> int:
    with db.lock:
        return int(db._db.execute("SELECT count(*) FROM pages").fetchone()[0])


def test_pages_split_as_a_directory_grows_and_go_when_emptied(db: StateDB) -> None:
    names = [f"f{i:05d}".encode() for i in range(1000)]
    with db.tx():
        for i, n in enumerate(reversed(names)):  # worst case: every insert lands in the first page
            db.put(b"/w", n, _rec(i), COPY_PENDING if i % 2 else COPY_NONE)
    assert db.recount() == 1000 and _count_pages(db) >= 1000 // PAGE_MAX
    assert list(db.children(b"/w")) == names
    assert db.get(b"/w", b"f00500") == (_rec(499), COPY_PENDING)
    assert db.get(b"/w", b"f00500x") is None and db.get(b"/v", b"f00500") is None
    with db.tx():
        db.put(b"/w", b"f00500", _rec(7, 2), COPY_NONE)  # replaced in place
    assert db.get(b"/w", b"f00500") == (_rec(7, 2), COPY_NONE) and db.count_dirs() == 1
    assert len(db.pending_copies(None, 10_000)) == 499  # f00500 was pending until it was replaced
    with db.tx():
        for n in names[:-1]:
            db.delete(b"/w", n)
    assert db.recount() == 1 and _count_pages(db) == 1 and list(db.children(b"/w")) == [names[-1]]
    with db.tx():  # a name below every stored page gets a new first page
        db.put(b"/w", b"a", _rec(1), COPY_NONE)
    assert list(db.children(b"/w")) == [b"a", names[-1]] and db.get(b"/w", b"a") == (_rec(1), COPY_NONE)


def test_baseline_pages_and_rows_agree_with_single_puts(db: StateDB) -> None:
    names = [f"n{i:04d}".encode() for i in range(300)]
    recs = [_rec(i) for i in range(300)]
    copies = bytearray([COPY_PENDING] * 300)
    with db.tx():
        db.put_pages(b"/w", pages_of(names[:200], recs[:200], copies[:200], b""))
        db.put_pages(b"/w", pages_of(names[200:], recs[200:], copies[200:], names[200]))
        # A page that overlaps what is stored is merged entry by entry, not stored beside it.
        db.put_pages(b"/w", pages_of([b"n0150x", b"n0250x"], [_rec(1), _rec(2)], bytearray(2), b"n0150x"))
    assert db.recount() == 302
    assert list(db.children(b"/w")) == sorted([*names, b"n0150x", b"n0250x"])
    assert db.get(b"/w", b"n0250x") == (_rec(2), 0) and db.get(b"/w", b"n0299") == (recs[299], COPY_PENDING)


def test_subtree_and_rotation_span_many_pages(db: StateDB) -> None:
    keys = [(f"/w/d{d}".encode(), f"f{i:04d}".encode()) for d in range(3) for i in range(700)]
    _fill(db, keys)
    assert [(p, n) for p, n, _ in db.subtree(b"/w", b"/", page=1)] == keys
    assert db.key_after(None, 701) == ((b"/w/d1", b"f0000"), False)
    assert db.key_after((b"/w/d0", b"f0699"), 700) == ((b"/w/d1", b"f0699"), False)
    assert db.key_after((b"/w/d2", b"f0600"), 200) == ((b"/w/d0", b"f0100"), True)
    assert db.key_after((b"/w/d2", b"f0600"), 5000) == (None, False)
    assert db.key_after((b"/a", b"x"), 1) == ((b"/w/d0", b"f0000"), False)  # before every key
    assert db.key_after((b"/w/d0", b"f0000x"), 1) == ((b"/w/d0", b"f0001"), False)  # between keys


def test_subtree_loses_nothing_when_pages_split_between_batches(db: StateDB) -> None:
    keys = [(b"/w/d", f"f{i:04d}".encode()) for i in range(0, 1000, 2)]
    _fill(db, keys)
    seen = []
    for i, (p, n, _) in enumerate(db.subtree(b"/w", b"/", page=1)):
        seen.append((p, n))
        if i == 10:  # the walk holds no lock between batches: the agent may write meanwhile
            with db.tx():
                for j in range(1, 1000, 2):
                    db.put(b"/w/d", f"f{j:04d}".encode(), _rec(j), COPY_NONE)
    assert seen[:11] == keys[:11] and set(keys) <= set(seen) and seen == sorted(set(seen))


def test_a_row_per_path_database_is_converted_to_pages(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE files (parent BLOB NOT NULL, name BLOB NOT NULL, st BLOB NOT NULL, "
                "copy INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (parent, name)) WITHOUT ROWID")
    old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    old.executemany("INSERT INTO meta VALUES (?, ?)", [("schema", "1"), ("baseline", "1")])
    rows = [(f"/w/{d}".encode(), f"f{i:03d}".encode(), _rec(i), i % 2) for d in "ab" for i in range(300)]
    old.executemany("INSERT INTO files VALUES (?, ?, ?, ?)", rows)
    old.commit()
    old.close()
    db = StateDB(path)
    try:
        assert db.meta("schema") == "2" and db.meta("baseline") == "1" and db.count == 600
        assert [(p, n, s) for p, n, s in db.subtree(b"/w", b"/")] == [r[:3] for r in rows]
        assert db.get(b"/w/b", b"f001") == (_rec(1), 1)
    finally:
        db.close()


def test_a_damaged_page_is_a_state_error(db: StateDB) -> None:
    _fill(db, [(b"/w", b"a")])
    with db.lock:
        db._db.execute("UPDATE pages SET data = substr(data, 1, 20)")
    with pytest.raises(FimStateError, match="damaged"):
        db.children(b"/w")
