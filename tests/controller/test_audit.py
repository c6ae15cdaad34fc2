"""The hash-chained audit log: it verifies when untouched and names the first entry that was tampered with."""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from controller.domain import audit
from controller.domain.ca import CertificateAuthority
from controller.storage.models import AuditEntry
from controller.storage.store import make_engine, upgrade
from tests.controller._db import migrated_sessions

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 3, 1, 9, 30, 0, 123456, tzinfo=dt.UTC)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(url=db_url) as factory:
        yield factory


def record_five(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        for i in range(1, 6):
            audit.record(
                s,
                f"user{i}",
                "ticket.update",
                "ticket",
                str(i),
                {"n": i, "note": f"change {i}"},
                at=T0 + dt.timedelta(minutes=i),
            )


def verify(sessions: sessionmaker[Session]) -> audit.VerifyResult:
    with sessions() as s:
        return audit.verify(s)


def tamper(sessions: sessionmaker[Session], sql: str, **params: object) -> None:
    with sessions.begin() as s:
        s.execute(text(sql), params)


def test_empty_log_verifies(sessions: sessionmaker[Session]) -> None:
    res = verify(sessions)
    assert res.ok
    assert res.entries == 0
    assert res.head == audit.GENESIS


def test_entries_are_chained_from_genesis(sessions: sessionmaker[Session]) -> None:
    record_five(sessions)
    with sessions() as s:
        rows = s.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars().all()
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].prev_hash == audit.GENESIS
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash
    assert rows[1].details == {"n": 2, "note": "change 2"}
    assert rows[1].at == T0 + dt.timedelta(minutes=2)

    res = verify(sessions)
    assert (res.ok, res.entries, res.first_bad_seq, res.reason) == (True, 5, None, "")
    assert res.head == rows[-1].hash


def test_details_are_stored_as_plain_json(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        entry = audit.record(s, "admin", "token.create", "token", "t1", {"expires_at": T0, "tags": ("a", "b")})
    assert entry.details == {"expires_at": str(T0), "tags": ["a", "b"]}
    assert verify(sessions).ok


def test_appending_after_verification_keeps_the_chain(sessions: sessionmaker[Session]) -> None:
    record_five(sessions)
    head = verify(sessions).head
    with sessions.begin() as s:
        entry = audit.record(s, "admin", "user.create", "user", "alice")
    assert entry.seq == 6
    assert entry.prev_hash == head
    assert verify(sessions).entries == 6


def test_altered_details_are_caught_at_that_entry(sessions: sessionmaker[Session]) -> None:
    record_five(sessions)
    tamper(sessions, "UPDATE audit_log SET details = :d WHERE seq = 2", d='{"n": 2, "note": "nothing happened"}')
    res = verify(sessions)
    assert not res.ok
    assert res.first_bad_seq == 2
    assert res.reason == "content does not match its hash (altered)"
    assert res.entries == 1


def test_altered_actor_is_caught(sessions: sessionmaker[Session]) -> None:
    record_five(sessions)
    tamper(sessions, "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 4")
    res = verify(sessions)
    assert (res.ok, res.first_bad_seq, res.entries) == (False, 4, 3)
    assert "altered" in res.reason


def test_deleted_entry_is_caught(sessions: sessionmaker[Session]) -> None:
    record_five(sessions)
    tamper(sessions, "DELETE FROM audit_log WHERE seq = 3")
    res = verify(sessions)
    assert not res.ok
    # The first entry present that does not follow on is 4; the reason names the gap.
    assert res.first_bad_seq == 4
    assert res.reason == "entry 3 is missing"
    assert res.entries == 2


def test_changed_hash_is_caught_at_that_entry(sessions: sessionmaker[Session]) -> None:
    record_five(sessions)
    tamper(sessions, "UPDATE audit_log SET hash = :h WHERE seq = 2", h="f" * 64)
    res = verify(sessions)
    assert (res.ok, res.first_bad_seq) == (False, 2)
    assert res.reason == "content does not match its hash (altered)"


def test_rewritten_entry_with_recomputed_hash_breaks_the_next_link(sessions: sessionmaker[Session]) -> None:
    record_five(sessions)
    # A careful forger fixes the hash of the entry they changed; the next entry still points at the old one.
    with sessions.begin() as s:
        entry = s.get(AuditEntry, 2)
        assert entry is not None
        entry.details = {"n": 2, "note": "nothing happened"}
        entry.hash = audit._hash(entry.prev_hash, entry)
    res = verify(sessions)
    assert (res.ok, res.first_bad_seq, res.entries) == (False, 3, 2)
    assert res.reason == "link to the previous entry is broken"


def test_changed_prev_hash_is_caught(sessions: sessionmaker[Session]) -> None:
    record_five(sessions)
    tamper(sessions, "UPDATE audit_log SET prev_hash = :h WHERE seq = 5", h="0" * 64)
    res = verify(sessions)
    assert (res.ok, res.first_bad_seq) == (False, 5)
    assert res.reason == "link to the previous entry is broken"


def test_verification_walks_more_than_one_batch(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        for i in range(7):
            audit.record(s, "system", "x", "y", str(i), at=T0)
    with sessions() as s:
        assert [e.seq for e in audit.iter_entries(s, batch=3)] == [1, 2, 3, 4, 5, 6, 7]
    tamper(sessions, "UPDATE audit_log SET object_id = 'z' WHERE seq = 6")
    res = verify(sessions)
    assert (res.ok, res.first_bad_seq, res.entries) == (False, 6, 5)


# -- the command --------------------------------------------------------------------------------------


def audit_verify(data_dir: Path, db_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli.controller", "audit", "verify", "--data-dir", str(data_dir),
         "--db", db_url, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_audit_verify_command_exit_codes(tmp_path: Path, db_url: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # What makes it a controller's data directory when the database lives elsewhere: its CA.
    CertificateAuthority.load_or_create(data_dir / "pki")
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with engine.begin() as conn, Session(bind=conn) as s:
            for i in range(3):
                audit.record(s, "admin", "user.create", "user", f"u{i}", {"i": i})
            s.flush()
    finally:
        engine.dispose()

    clean = audit_verify(data_dir, db_url)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.startswith("audit log verified:")
    assert "Traceback" not in clean.stderr

    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE audit_log SET details = '{\"i\": 42}' WHERE seq = 2"))
    finally:
        engine.dispose()

    broken = audit_verify(data_dir, db_url)
    assert broken.returncode == 1
    assert "Traceback" not in broken.stderr
    lines = broken.stderr.strip().splitlines()
    assert len(lines) == 1, broken.stderr
    assert "BROKEN at entry 2" in lines[0]
    assert "altered" in lines[0]

    as_json = audit_verify(data_dir, db_url, "--json")
    assert as_json.returncode == 1
    assert '"first_bad_seq": 2' in as_json.stdout


def test_two_writers_appending_at_once_both_land_in_order(sessions: sessionmaker[Session]) -> None:
    """A second writer waits for the first one's commit instead of colliding on the next seq."""
    import threading

    first_in = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with sessions.begin() as s:
                audit.record(s, "ingest", "ticket.open", "ticket", "1")
                first_in.set()
                release.wait(10)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=first)
    t.start()
    assert first_in.wait(10)
    second_done = threading.Event()

    def second() -> None:
        try:
            with sessions.begin() as s:
                audit.record(s, "alice", "sweep.run", "sweep", "s1")
            second_done.set()
        except BaseException as exc:
            errors.append(exc)

    t2 = threading.Thread(target=second)
    t2.start()
    # The second writer cannot finish while the first holds the log; it is not refused either.
    assert not second_done.wait(0.5)
    release.set()
    t.join(10)
    t2.join(40)
    assert errors == [] and second_done.is_set()
    with sessions() as s:
        assert [(e.seq, e.actor) for e in audit.iter_entries(s)] == [(1, "ingest"), (2, "alice")]
        assert audit.verify(s).ok
