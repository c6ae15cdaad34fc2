"""The SQLite baseline: key ranges, subtrees, rotation slices."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
        db.put_many([(p, n, b"\x01" + bytes(44), COPY_PENDING) for p, n in keys])
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
