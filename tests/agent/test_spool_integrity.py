"""The spool's incarnation, checksums, quarantine, integrity at start and overflow episodes."""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.spool import INCARNATION_FILE, MISSING_NOTE, Spool, checksum, open_spool


def payload(seq: int) -> bytes:
    return f"report-{seq}".encode()


def fill(path: Path, n: int, body: Callable[[int], bytes] = payload) -> Spool:
    sp = open_spool(path)
    for _ in range(n):
        assert sp.put(body) is not None
    return sp


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def aside(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.glob(f"{path.name}.damaged-*") if not p.name.endswith(("-wal", "-shm")))


# -- incarnation ----------------------------------------------------------------------------------------


def test_a_new_spool_has_an_incarnation_kept_in_it_and_next_to_it(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    sp = open_spool(path)
    try:
        assert re.fullmatch(r"[0-9a-f]{32}", sp.incarnation)
        assert sp.note == ""  # the first spool of an enrollment
        first = sp.incarnation
    finally:
        sp.close()
    assert (tmp_path / INCARNATION_FILE).read_text().strip() == first
    again = open_spool(path)
    try:
        assert again.incarnation == first and again.note == ""
    finally:
        again.close()


def test_a_deleted_spool_starts_a_new_incarnation_that_says_so(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "spool.db"
    sp = fill(path, 3)
    old = sp.incarnation
    sp.close()
    for p in tmp_path.glob("spool.db*"):
        p.unlink()
    with caplog.at_level(logging.ERROR, logger="agent.spool"):
        sp = open_spool(path)
    try:
        assert sp.incarnation != old
        assert sp.note == MISSING_NOTE
        assert sp.put(payload) == 1  # sequences start again, under the new incarnation
    finally:
        sp.close()
    assert (tmp_path / INCARNATION_FILE).read_text().strip() != old
    assert [r.message for r in caplog.records if "missing" in r.message]
    # The note stays with the incarnation: a restart before the controller heard it still says it.
    reopened = open_spool(path)
    try:
        assert reopened.note == MISSING_NOTE
    finally:
        reopened.close()


def test_an_old_spool_is_upgraded_and_its_rows_keep_being_delivered(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE reports (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.executemany("INSERT INTO reports VALUES (?, ?)", [(s, payload(s)) for s in (7, 8)])
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("next_seq", 9), ("bytes", 16), ("dropped", 2)])
    db.commit()
    db.close()

    sp = open_spool(path)
    try:
        assert re.fullmatch(r"[0-9a-f]{32}", sp.incarnation)
        assert sp.pending() == [(7, payload(7)), (8, payload(8))]
        assert sp.put(payload) == 9  # sequences continue: nothing collides with the rows it already sent
        stats = sp.stats()
        assert stats["dropped"] == 2 and stats["dropped_total"] == 0 and stats["quarantined"] == 0
    finally:
        sp.close()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT payload, crc FROM reports ORDER BY seq").fetchall()
    assert all(crc == checksum(bytes(body)) for body, crc in rows)


# -- checksums and quarantine ---------------------------------------------------------------------------


def test_a_flipped_payload_byte_is_refused_and_quarantined(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "spool.db"
    sp = fill(path, 3, lambda seq: f"report-{seq}-{'x' * 40}".encode())
    sp.close()  # the last connection checkpoints: the rows are in the main file now
    assert not (tmp_path / "spool.db-wal").exists()
    data = path.read_bytes()
    at = data.index(b"report-2-")
    flip(path, at + 12)

    with caplog.at_level(logging.ERROR, logger="agent.spool"):
        sp = open_spool(path)  # the file's structure is sound: no integrity failure, same incarnation
    try:
        assert not aside(path)
        assert [s for s, _ in sp.pending()] == [1, 3]
        [(seq, body, reason, _at)] = sp.quarantined()
        assert seq == 2 and body != f"report-2-{'x' * 40}".encode() and "checksum" in reason
        assert sp.stats()["quarantined"] == 1
        assert sp.stats()["depth"] == 2
    finally:
        sp.close()
    [line] = [r.message for r in caplog.records if "checksum" in r.message]
    assert str(path) in line and "report 2 " in line


def test_a_rejected_report_moves_to_the_quarantine_which_is_bounded(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "spool.db", max_bytes=400)  # quarantine holds 100 bytes
    try:
        for _ in range(4):
            sp.put(lambda seq: bytes([seq]) * 40)
        assert sp.quarantine(1, "rejected by the controller: malformed")
        assert not sp.quarantine(1, "again")  # no longer queued
        assert sp.quarantine(2, "rejected by the controller: too large")
        assert [s for s, *_ in sp.quarantined()] == [1, 2]
        assert sp.quarantine(3, "rejected by the controller: out of range")
        # 120 bytes > 100: the oldest is evicted and counted, the newest is always kept.
        assert [s for s, *_ in sp.quarantined()] == [2, 3]
        stats = sp.stats()
        assert stats["quarantine_evicted"] == 1 and stats["quarantined"] == 2
        assert [s for s, _ in sp.pending()] == [4] and stats["bytes"] == 40
    finally:
        sp.close()


# -- integrity at start ---------------------------------------------------------------------------------


def test_a_damaged_header_is_moved_aside_and_a_new_incarnation_begins(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "spool.db"
    sp = fill(path, 5)
    old = sp.incarnation
    sp.close()
    flip(path, 3)  # "SQLite format 3": the header no longer says it is a database

    with caplog.at_level(logging.ERROR, logger="agent.spool"):
        sp = open_spool(path)
    try:
        [moved] = aside(path)
        assert re.fullmatch(r"spool\.db\.damaged-\d{8}T\d{6}Z", moved.name)
        assert sp.incarnation != old
        assert str(moved) in sp.note and "integrity" in sp.note
        assert sp.pending() == [] and sp.put(payload) == 1
    finally:
        sp.close()
    [line] = [r.message for r in caplog.records if "damaged" in r.message]
    assert str(path) in line and str(moved) in line and "new spool" in line


def test_a_damaged_page_is_moved_aside_and_a_new_incarnation_begins(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    sp = fill(path, 200, lambda seq: f"report-{seq}-".encode() * 20)
    old = sp.incarnation
    sp.close()
    with sqlite3.connect(path) as db:
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        root = int(db.execute("SELECT rootpage FROM sqlite_master WHERE name='reports'").fetchone()[0])
    # The reports table's root page is an interior page over the leaves: break its cell pointers.
    for i in range(8, 16):
        flip(path, (root - 1) * page_size + i)

    sp = open_spool(path)
    try:
        [moved] = aside(path)
        assert sp.incarnation != old and str(moved) in sp.note
        assert sp.put(payload) == 1
    finally:
        sp.close()


# -- overflow episodes ----------------------------------------------------------------------------------


def test_drops_mark_tasks_dirty_and_count_episodes(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "spool.db", max_bytes=100)
    try:
        assert sp.put(lambda s: b"a" * 100, task_id="t1", check_id="ports") == 1
        assert sp.put(lambda s: b"b", task_id="t1", check_id="ports") is None
        assert sp.put(lambda s: b"c", task_id="t2", check_id="fim") is None
        assert sp.put(lambda s: b"d", task_id="t2", check_id="fim") is None
        stats = sp.stats()
        assert (stats["dropped"], stats["dropped_total"], stats["pending_recovery"]) == (3, 3, 2)
        assert sp.dirty() == [("t1", "ports", 1, False), ("t2", "fim", 2, False)]
        assert not sp.room.is_set()

        woken: list[bool] = []
        sp.on_wake = lambda: woken.append(sp.recovered.is_set())
        sp.ack([1])  # room again: recovery may start
        assert sp.room.is_set() and woken == [False]
        sp.hold("t2", "fim", True)  # fim re-scans itself: a later result of it does not clear it
        assert sp.put(lambda s: b"e", task_id="t2", check_id="fim") == 2
        assert sp.put(lambda s: b"f", task_id="t1", check_id="ports") == 3  # t1 ran again: clean
        assert sp.dirty() == [("t2", "fim", 2, True)]
        assert not sp.recovered.is_set()
        sp.hold("t2", "fim", False)
        assert sp.recovered.is_set() and woken[-1] is True
        stats = sp.stats()
        # Recovered: the episode's count stays until the next drop starts a new episode.
        assert (stats["dropped"], stats["dropped_total"], stats["pending_recovery"]) == (3, 3, 0)

        assert sp.put(lambda s: b"g" * 100, task_id="t1", check_id="ports") is None
        stats = sp.stats()
        assert (stats["dropped"], stats["dropped_total"], stats["pending_recovery"]) == (1, 4, 1)
    finally:
        sp.close()


def test_dirty_tasks_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    sp = Spool(path, max_bytes=10)
    try:
        assert sp.put(lambda s: b"x" * 11, task_id="t1", check_id="ports") is None
    finally:
        sp.close()
    again = Spool(path, max_bytes=10)
    try:
        assert again.dirty() == [("t1", "ports", 1, False)]
        assert again.room.is_set()  # the queue is empty: the task runs again at once
        assert again.stats()["dropped"] == 1
    finally:
        again.close()


def test_a_wal_left_without_its_database_is_moved_aside_not_replayed(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    sp = fill(path, 3)
    old = sp.incarnation
    wal = tmp_path / "spool.db-wal"
    kept = wal.read_bytes()
    sp.close()
    path.unlink()
    wal.write_bytes(kept)  # someone deleted spool.db but not its log
    sp = open_spool(path)
    try:
        assert sp.incarnation != old
        assert "moved to" in sp.note and "missing" in sp.note
        assert list(tmp_path.glob("spool.db.damaged-*-wal"))
    finally:
        sp.close()


def test_a_damaged_last_commit_is_used_with_a_warning_naming_the_frame(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Indistinguishable from a crash during that commit: the spool is kept, the loss said out loud."""
    live = tmp_path / "live" / "spool.db"
    live.parent.mkdir()
    sp = fill(live, 3)
    copy = tmp_path / "spool.db"
    for suffix in ("", "-wal"):  # as a power cut leaves them
        Path(f"{copy}{suffix}").write_bytes(Path(f"{live}{suffix}").read_bytes())
    old = sp.incarnation
    sp.close()
    wal = Path(f"{copy}-wal")
    data = wal.read_bytes()
    size = 24 + int.from_bytes(data[8:12], "big")
    last = (len(data) - 32) // size
    assert int.from_bytes(data[32 + (last - 1) * size + 4:32 + (last - 1) * size + 8], "big") != 0
    flip(wal, 32 + (last - 1) * size + 24 + 300)
    with caplog.at_level(logging.WARNING, logger="agent.spool"):
        again = open_spool(copy)
    try:
        assert again.incarnation == old and again.note == "" and not aside(copy)
        warned = [r.getMessage() for r in caplog.records if r.name == "agent.spool"]
        assert len(warned) == 1 and f"frame {last}, in the last transaction" in warned[0], warned
        assert "the last result spooled may be lost" in warned[0]
    finally:
        again.close()
