"""common.sqlite_integrity on real databases written by SQLite, each damaged by one flipped byte."""

from __future__ import annotations

import shutil
import sqlite3
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.sqlite_integrity import Inspection, check, inspect, move_aside

PAGE = 4096
WAL_HEADER, FRAME_HEADER = 32, 24
FRAME = FRAME_HEADER + PAGE


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _frames(wal: Path) -> list[tuple[int, int, int]]:
    """(frame number, page number, commit size) of each whole frame."""
    data = wal.read_bytes()
    out = []
    for n, off in enumerate(range(WAL_HEADER, len(data) - FRAME + 1, FRAME), start=1):
        pgno, commit = struct.unpack(">2I", data[off:off + 8])
        out.append((n, pgno, commit))
    return out


def _frame_offset(n: int) -> int:
    return WAL_HEADER + (n - 1) * FRAME


def _snapshot(src: Path, dest_dir: Path) -> Path:
    """Copy a database and its -wal as a crash would leave them (the writer still has them open)."""
    dest_dir.mkdir()
    for suffix in ("", "-wal"):
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", dest_dir / f"{src.name}{suffix}")
    return dest_dir / src.name


def _count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """A WAL database with ten committed transactions, all still in the WAL."""
    db = tmp_path / "live" / "x.db"
    db.parent.mkdir()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(f"PRAGMA page_size={PAGE}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT)")
    for i in range(10):
        conn.execute("INSERT INTO t (v) VALUES (?)", (f"row {i} " * 200,))
    yield db, conn
    conn.close()


def test_an_intact_database_and_its_wal_pass(writer: tuple[Path, sqlite3.Connection], tmp_path: Path) -> None:
    db, _ = writer
    copy = _snapshot(db, tmp_path / "copy")
    before = {p.name: p.read_bytes() for p in copy.parent.iterdir()}
    assert check(copy) is None
    assert {p.name: p.read_bytes() for p in copy.parent.iterdir() if p.name in before} == before  # read only
    assert _count(copy) == 10


def test_a_missing_database_is_fine_but_not_a_lone_wal(tmp_path: Path) -> None:
    assert check(tmp_path / "new.db") is None
    (tmp_path / "new.db-wal").write_bytes(b"x" * 100)
    problem = check(tmp_path / "new.db")
    assert problem is not None and "missing" in problem


def test_a_flipped_byte_in_an_early_committed_frame_is_damage(
        writer: tuple[Path, sqlite3.Connection], tmp_path: Path) -> None:
    db, _ = writer
    copy = _snapshot(db, tmp_path / "copy")
    frames = _frames(Path(f"{copy}-wal"))
    first_commit = next(n for n, _, commit in frames if commit)
    assert first_commit < len(frames)  # later committed transactions follow it
    _flip(Path(f"{copy}-wal"), _frame_offset(first_commit) + FRAME_HEADER + 100)
    problem = check(copy)
    assert problem is not None
    assert f"frame {first_commit} is damaged" in problem and "x.db-wal" in problem
    # What the check protects against: SQLite itself opens the copy without complaint, truncated.
    assert sqlite3.connect(copy).execute("PRAGMA quick_check").fetchone() == ("ok",)


def test_a_flipped_salt_in_an_early_frame_header_is_damage(
        writer: tuple[Path, sqlite3.Connection], tmp_path: Path) -> None:
    db, _ = writer
    copy = _snapshot(db, tmp_path / "copy")
    _flip(Path(f"{copy}-wal"), _frame_offset(2) + 8)  # salt-1 of frame 2
    problem = check(copy)
    assert problem is not None and "frame 2 is damaged" in problem


def test_a_damaged_wal_header_is_damage(writer: tuple[Path, sqlite3.Connection], tmp_path: Path) -> None:
    db, _ = writer
    copy = _snapshot(db, tmp_path / "copy")
    _flip(Path(f"{copy}-wal"), 17)  # salt-1 in the header: its checksum no longer matches
    problem = check(copy)
    assert problem is not None and "header is damaged" in problem


def test_a_flipped_byte_in_the_last_committed_transaction_is_a_notice_not_silence(
        writer: tuple[Path, sqlite3.Connection], tmp_path: Path) -> None:
    """The format cannot tell it from a crash during that commit: started on, but said out loud."""
    db, _ = writer
    copy = _snapshot(db, tmp_path / "copy")
    wal = Path(f"{copy}-wal")
    frames = _frames(wal)
    last = frames[-1]
    assert last[2] != 0  # the log ends with a commit frame
    _flip(wal, _frame_offset(last[0]) + FRAME_HEADER + 100)
    seen = inspect(copy)
    assert seen.problem is None
    assert seen.notice is not None and f"frame {last[0]}, in the last transaction" in seen.notice
    assert "x.db-wal" in seen.notice and "lost" in seen.notice
    assert _count(copy) == 9  # what the notice is about: SQLite opens it without the last transaction


def test_a_flipped_byte_one_transaction_before_the_last_is_damage(
        writer: tuple[Path, sqlite3.Connection], tmp_path: Path) -> None:
    db, _ = writer
    copy = _snapshot(db, tmp_path / "copy")
    wal = Path(f"{copy}-wal")
    commits = [n for n, _, commit in _frames(wal) if commit]
    _flip(wal, _frame_offset(commits[-2]) + FRAME_HEADER + 100)
    seen = inspect(copy)
    assert seen.notice is None
    assert seen.problem is not None and f"frame {commits[-2]} is damaged" in seen.problem


def test_an_intact_wal_has_no_notice(writer: tuple[Path, sqlite3.Connection], tmp_path: Path) -> None:
    db, _ = writer
    assert inspect(_snapshot(db, tmp_path / "copy")) == Inspection(None, None)


def _uncommitted_tail(tmp_path: Path) -> Path:
    """A snapshot taken while a big transaction has spilled uncommitted frames into the WAL."""
    db = tmp_path / "live" / "x.db"
    db.parent.mkdir()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(f"PRAGMA page_size={PAGE}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA cache_size=5")  # pages spill to the WAL long before the commit
    conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t (v) VALUES ('committed')")
    conn.execute("BEGIN")
    for i in range(200):
        conn.execute("INSERT INTO t (v) VALUES (?)", (f"pending {i} " * 100,))
    copy = _snapshot(db, tmp_path / "copy")
    conn.execute("ROLLBACK")
    conn.close()
    return copy


def test_a_flipped_byte_in_the_last_frame_of_an_uncommitted_tail_is_not_damage(tmp_path: Path) -> None:
    copy = _uncommitted_tail(tmp_path)
    wal = Path(f"{copy}-wal")
    frames = _frames(wal)
    last_commit = max(n for n, _, commit in frames if commit)
    assert len(frames) > last_commit + 1  # the tail has frames, none of them a commit
    _flip(wal, _frame_offset(len(frames)) + FRAME_HEADER + 7)
    assert inspect(copy) == Inspection(None, None)  # a transaction with no commit frame was never committed
    assert _count(copy) == 1


def test_a_tail_cut_short_by_a_crash_is_not_damage(tmp_path: Path) -> None:
    copy = _uncommitted_tail(tmp_path)
    wal = Path(f"{copy}-wal")
    wal.write_bytes(wal.read_bytes()[:-PAGE // 2])
    assert check(copy) is None


def test_frames_of_an_earlier_wal_generation_are_not_damage(tmp_path: Path) -> None:
    db = tmp_path / "live" / "x.db"
    db.parent.mkdir()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT)")
    for i in range(10):
        conn.execute("INSERT INTO t (v) VALUES (?)", (f"old {i} " * 200,))
    conn.execute("PRAGMA wal_checkpoint(RESTART)")
    conn.execute("INSERT INTO t (v) VALUES ('new')")  # restarts the WAL with new salts
    copy = _snapshot(db, tmp_path / "copy")
    conn.close()
    data = Path(f"{copy}-wal").read_bytes()
    salts = {data[off + 8:off + 16] for off in range(WAL_HEADER, len(data) - FRAME + 1, FRAME)}
    assert len(salts) == 2  # leftovers of the first generation are still in the file
    assert check(copy) is None
    assert _count(copy) == 11


def _checkpointed(tmp_path: Path) -> Path:
    db = tmp_path / "x.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(f"PRAGMA page_size={PAGE}")
    conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT)")
    for i in range(50):
        conn.execute("INSERT INTO t (v) VALUES (?)", (f"row {i} " * 20,))
    conn.close()
    assert check(db) is None
    return db


def test_a_flipped_byte_in_the_file_header_is_damage(tmp_path: Path) -> None:
    db = _checkpointed(tmp_path)
    _flip(db, 0)  # "SQLite format 3"
    problem = check(db)
    assert problem is not None and "file is not a database" in problem


def test_a_flipped_byte_in_a_btree_page_is_damage(tmp_path: Path) -> None:
    db = _checkpointed(tmp_path)
    root = sqlite3.connect(db).execute("SELECT rootpage FROM sqlite_master WHERE name = 't'").fetchone()[0]
    _flip(db, (root - 1) * PAGE + 3)  # the number of cells on the table's root page
    problem = check(db)
    assert problem is not None and str(db) in problem
    assert "integrity check" in problem or "malformed" in problem


def test_move_aside_renames_the_database_with_its_wal_and_keeps_earlier_ones(
        writer: tuple[Path, sqlite3.Connection], tmp_path: Path) -> None:
    db, _ = writer
    copy = _snapshot(db, tmp_path / "copy")
    Path(f"{copy}-shm").write_bytes(b"")
    now = datetime(2026, 12, 4, 5, 6, 7, tzinfo=UTC)
    first = move_aside(copy, now)
    assert first.name == "x.db.damaged-20261204T050607Z"
    assert sorted(p.name for p in copy.parent.iterdir()) == [
        "x.db.damaged-20261204T050607Z", "x.db.damaged-20261204T050607Z-shm",
        "x.db.damaged-20261204T050607Z-wal"]
    assert _count(first) == 10  # the moved copy still opens with its WAL
    copy.write_bytes(b"")
    second = move_aside(copy, now)
    assert second.name == "x.db.damaged-20261204T050607Z-1" and first.exists()
    copy.write_bytes(b"")
    replaced = move_aside(copy, now, label="replaced")
    assert replaced.name == "x.db.replaced-20261204T050607Z" and replaced.exists() and not copy.exists()


def test_a_flipped_byte_in_an_index_entry_needs_the_thorough_check(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(f"PRAGMA page_size={PAGE}")
    conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("CREATE INDEX t_v ON t (v)")
    for i in range(20):
        conn.execute("INSERT INTO t (v) VALUES (?)", (f"value-{i:04d}",))
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 't_v'").fetchone()[0]
    conn.close()
    page = bytearray(db.read_bytes()[(root - 1) * PAGE:root * PAGE])
    at = page.index(b"value-0007")
    _flip(db, (root - 1) * PAGE + at + 6)  # one key of the index no longer matches its row
    assert check(db) is None  # quick_check reads every page but does not compare indexes with tables
    problem = check(db, thorough=True)
    assert problem is not None and "integrity check" in problem
