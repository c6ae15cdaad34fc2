"""The storage contract, on SQLite and on PostgreSQL: what differs between the two is exercised here.

SQLite has one write lock and the controller gives it one writer thread; PostgreSQL locks rows and
advisory keys and gets four writer threads. Each test holds on both: the audit chain stays whole under
writers racing, a ticket moved twice at once moves once, the migrations build exactly the models'
schema from an empty database, and a database that cannot be used is one clear line.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from common.errors import UsageError
from common.pki import new_key_and_csr
from controller.baselines import load_baseline
from controller.core import Controller, ControllerConfig
from controller.domain import audit, workflow
from controller.domain.ca import CertificateAuthority
from controller.domain.enrollment import create_token, enroll
from controller.domain.ingest import ingest_reports
from controller.domain.policy import applicable_rules
from controller.domain.tickets import RuleRef, apply_outcomes
from controller.domain.users import create_user
from controller.errors import Conflict, EnrollmentError
from controller.judges.base import Observation
from controller.judges.registry import CHECK_SPECS
from controller.storage.models import Agent, AuditEntry, Base, Finding, Result, TicketEvent, User
from controller.storage.store import alembic_config, make_engine, parse_url, safe_url, upgrade
from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import common_pb2, report_pb2
from tests.controller._db import migrated_sessions
from tests.controller.test_fim import AGENT, HOST, T0, Fleet, fim_event, fim_result

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Correct-Horse-42-battery"
PORTS = RuleRef("PORTS-ALLOWED", "ports", "high", ("TPEx-CPA 3(10)5",), "tw-securities-linux", 1)
WAIT_S = 30.0


def is_postgresql(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def wait_for_a_lock_waiter(engine: Engine, locktype: str | None = None) -> None:
    """On PostgreSQL, return once a session of this database waits for a lock (of ``locktype``, if
    given): the race under test is then really happening. SQLite's waiters cannot be observed; there
    the controller's single writer thread keeps writers apart (tests/controller/test_audit.py covers
    SQLite's write lock)."""
    if engine.dialect.name != "postgresql":
        return
    query = text(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE NOT l.granted AND a.datname = current_database()"
        + (" AND l.locktype = :locktype" if locktype else "")
    )
    deadline = time.monotonic() + WAIT_S
    with engine.connect() as conn:
        while conn.execute(query, {"locktype": locktype}).scalar_one() == 0:
            conn.rollback()  # a fresh snapshot of pg_locks on the next poll
            assert time.monotonic() < deadline, f"no session started waiting for a lock ({locktype or 'any type'})"
            time.sleep(0.01)  # polling interval of the server's lock table


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(url=db_url) as factory:
        yield factory


@pytest.fixture
def ctl(tmp_path: Path, db_url: str) -> Iterator[Controller]:
    controller = Controller.open(ControllerConfig(data_dir=tmp_path / "data", db_url=db_url))
    yield controller
    controller.writer.shutdown(wait=True)
    controller.sessions.kw["bind"].dispose()


# -- migrations ----------------------------------------------------------------------------------------


def test_migrations_build_the_models_schema_from_an_empty_database_and_back(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert inspect(engine).get_table_names() == []
        upgrade(engine)
        assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert context.get_current_revision() == head
            # Columns, types, nullability, indexes and constraints as the models declare them.
            assert compare_metadata(context, Base.metadata) == []
        upgrade(engine)  # idempotent: a restart migrates nothing
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(engine)
        assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
    finally:
        engine.dispose()


def test_timestamps_come_back_as_the_same_utc_instant(sessions: sessionmaker[Session]) -> None:
    taipei = dt.timezone(dt.timedelta(hours=8))
    at = dt.datetime(2026, 3, 1, 17, 30, 0, 123456, tzinfo=taipei)
    with sessions.begin() as s:
        audit.record(s, "alice", "test.time", "test", "1", {"ok": True, "n": None}, at=at)
    with sessions() as s:
        entry = s.execute(select(AuditEntry)).scalar_one()
        assert entry.at == at and entry.at.utcoffset() == dt.timedelta(0)
        assert entry.details == {"ok": True, "n": None}
        assert audit.verify(s).ok


def race(sessions: sessionmaker[Session], first: Callable[[Session], object], second: Callable[[Session], object],
         locktype: str | None = None) -> list[BaseException]:
    """Run ``first`` in a transaction held open until ``second``, in a transaction of another thread, waits
    for it (on PostgreSQL, for a lock of ``locktype``); then let both finish. Returns what they raised."""
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run(work: Callable[[Session], object], hold: bool) -> None:
        try:
            with sessions.begin() as s:
                work(s)
                if hold:
                    holding.set()
                    assert release.wait(WAIT_S)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    t1 = threading.Thread(target=run, args=(first, True))
    t1.start()
    assert holding.wait(WAIT_S)
    t2 = threading.Thread(target=run, args=(second, False))
    t2.start()
    wait_for_a_lock_waiter(sessions.kw["bind"], locktype)
    release.set()
    t1.join(WAIT_S)
    t2.join(WAIT_S)
    return errors


# -- the audit log's lock ------------------------------------------------------------------------------


def test_a_second_audit_writer_waits_for_the_first_and_the_chain_stays_whole(
        sessions: sessionmaker[Session], db_url: str) -> None:
    # On PostgreSQL the second writer waits on the audit log's advisory lock, not on a row.
    errors = race(sessions, lambda s: audit.record(s, "first", "test.write", "test", "1"),
                  lambda s: audit.record(s, "second", "test.write", "test", "2"), "advisory")
    assert errors == []
    with sessions() as s:
        assert [(e.seq, e.actor) for e in audit.iter_entries(s)] == [(1, "first"), (2, "second")]
        assert audit.verify(s).ok


def test_a_writer_waits_for_a_lock_a_bounded_time_on_postgresql(pg_url: str) -> None:
    # A stuck transaction holding a lock must not block every writer for ever (SQLite: busy_timeout).
    own = f"{pg_url}{'&' if '?' in pg_url else '?'}options=-c%20lock_timeout%3D2s"
    for url, want in ((pg_url, "30s"), (own, "2s")):
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SHOW lock_timeout")).scalar_one() == want, "the URL's own options win"
        finally:
            engine.dispose()


def test_two_threads_appending_all_the_time_keep_one_valid_chain(sessions: sessionmaker[Session]) -> None:
    per_writer = 25
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            start.wait(WAIT_S)
            for i in range(per_writer):
                with sessions.begin() as s:
                    audit.record(s, name, "test.write", "test", f"{name}-{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    with sessions() as s:
        entries = list(audit.iter_entries(s))
        assert [e.seq for e in entries] == list(range(1, 2 * per_writer + 1))
        for name in ("a", "b"):  # each writer's entries in the order it wrote them
            assert [e.object_id for e in entries if e.actor == name] == [f"{name}-{i}" for i in range(per_writer)]
        result = audit.verify(s)
        assert (result.ok, result.entries) == (True, 2 * per_writer)


# -- the controller's writer threads -------------------------------------------------------------------


def test_the_controller_runs_one_writer_on_sqlite_and_four_side_by_side_on_postgresql(
        ctl: Controller, db_url: str) -> None:
    expected = 4 if is_postgresql(db_url) else 1
    assert ctl.writer._max_workers == expected
    together = threading.Barrier(expected)

    def work(i: int) -> str:
        together.wait(WAIT_S)  # passes only when `expected` writers run at the same time
        with ctl.sessions.begin() as s:
            audit.record(s, f"writer{i}", "test.write", "test", str(i))
        return threading.current_thread().name

    async def all_at_once() -> list[str]:
        return list(await asyncio.gather(*(ctl.db(work, i) for i in range(expected))))

    names = asyncio.run(all_at_once())
    assert len(set(names)) == expected
    with ctl.sessions() as s:
        result = audit.verify(s)
        assert result.ok
        actors = [e.actor for e in audit.iter_entries(s)]
    assert sorted(a for a in actors if a.startswith("writer")) == [f"writer{i}" for i in range(expected)]


def test_a_ticket_moved_twice_at_once_moves_once_and_the_other_is_refused(ctl: Controller) -> None:
    now = dt.datetime.now(dt.UTC)
    with ctl.sessions.begin() as s:
        for name in ("alice", "bob"):
            create_user(s, name, "analyst", PASSWORD, "test")
        (ticket,) = apply_outcomes(s, "agt-1", "web1", PORTS, [Observation("tcp/0.0.0.0:6379", "fail", "open", {})],
                                   now, None)
        tid = ticket.id

    def move(name: str, holding: threading.Event | None = None, release: threading.Event | None = None) -> str:
        with ctl.sessions.begin() as s:
            actor = s.get(User, name)
            assert actor is not None
            t = workflow.transition(s, tid, "in_progress", actor)
            if holding is not None and release is not None:
                holding.set()
                assert release.wait(WAIT_S)
            return t.status

    holding, release = threading.Event(), threading.Event()
    first = ctl.writer.submit(move, "alice", holding, release)
    assert holding.wait(WAIT_S)
    second = ctl.writer.submit(move, "bob")
    # PostgreSQL: bob's transaction waits on the ticket's row lock (SELECT ... FOR UPDATE) on a second
    # writer thread. SQLite: bob waits behind alice for the one writer thread.
    wait_for_a_lock_waiter(ctl.sessions.kw["bind"])
    release.set()
    assert first.result(WAIT_S) == "in_progress"
    with pytest.raises(Conflict, match="cannot go from in_progress to in_progress"):
        second.result(WAIT_S)
    with ctl.sessions() as s:
        moves = s.execute(select(TicketEvent.actor, TicketEvent.from_status, TicketEvent.to_status)
                          .where(TicketEvent.ticket_id == tid, TicketEvent.kind == "transition")).all()
        assert [tuple(m) for m in moves] == [("alice", "open", "in_progress")]
        assert audit.verify(s).ok


def test_one_token_enrolling_two_hosts_at_once_enrols_one(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "pki")
    csr_pem = new_key_and_csr("any")[1]
    with sessions.begin() as s:
        token = create_token(s, ca, dt.timedelta(hours=1), [], "cli:admin")
    # PostgreSQL: the second waits for the first (the token's row, or the audit log's lock), then finds
    # the token used and creates nothing.
    errors = race(sessions, lambda s: enroll(s, ca, token, csr_pem, "web-01", "0.1.0", "linux"),
                  lambda s: enroll(s, ca, token, csr_pem, "web-02", "0.1.0", "linux"))
    assert len(errors) == 1 and isinstance(errors[0], EnrollmentError), errors
    assert "already used" in str(errors[0])
    with sessions() as s:
        assert s.execute(select(Agent.hostname)).scalars().all() == ["web-01"]
        assert audit.verify(s).ok


# -- what an agent or a person may send that one database holds and the other would refuse -------------


def test_a_nul_character_is_stored_not_a_batch_that_fails_on_every_resend(sessions: sessionmaker[Session],
                                                                          db_url: str) -> None:
    with sessions.begin() as s:
        s.add(Agent(id=AGENT, hostname=HOST, enrolled_at=T0, cert_serial="1", cert_not_after=T0,
                    tags=["linux", "web"], max_sequence=0))
        create_user(s, "alice", "analyst", PASSWORD, "test")
    fleet = Fleet(sessions)
    reports = []
    for seq, message in ((1, "scan\x00done"), (2, "")):  # a batch of two: the results go in one executemany
        report = report_pb2.Report(sequence=seq, check_id="fim", check_version=1, status=common_pb2.CheckStatus(
            kind=common_pb2.CheckStatus.OK, message=message))  # type: ignore[arg-type]
        report.collected_at.FromDatetime(T0)
        report.fim.CopyFrom(fim_result(fim_event()))
        reports.append(report)
    with sessions.begin() as s:
        acks = ingest_reports(s, AGENT, reports, fleet.rules, now=T0)
    assert [a.outcome for a in acks] == [pb.Ack.STORED, pb.Ack.STORED]
    (ticket,) = fleet.tickets()
    with sessions.begin() as s:
        alice = s.get(User, "alice")
        assert alice is not None
        workflow.comment(s, ticket.id, "pasted\x00from a terminal", alice)
    # SQLite keeps U+0000; PostgreSQL text cannot, and gets U+FFFD in its place.
    kept = "\ufffd" if is_postgresql(db_url) else "\x00"
    with sessions() as s:
        stored = s.execute(select(Result).where(Result.sequence == 1)).scalar_one()
        assert stored.status_message == f"scan{kept}done"
        assert stored.raw == reports[0].SerializeToString()  # the report as received, byte for byte
        texts = s.execute(select(TicketEvent.text).where(TicketEvent.kind == "comment")).scalars().all()
        assert texts == [f"pasted{kept}from a terminal"]
        assert audit.verify(s).ok


def test_a_task_id_longer_than_the_column_is_refused_by_name(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        s.add(Agent(id=AGENT, hostname=HOST, enrolled_at=T0, cert_serial="1", cert_not_after=T0,
                    tags=["linux", "web"], max_sequence=0))
    fleet = Fleet(sessions)
    reports = []
    for seq, task in ((1, "t" * 65), (2, "")):
        report = report_pb2.Report(sequence=seq, check_id="fim", check_version=1, task_id=task,
                                   status=common_pb2.CheckStatus(kind=common_pb2.CheckStatus.OK))  # type: ignore[arg-type]
        report.collected_at.FromDatetime(T0)
        report.fim.CopyFrom(fim_result(fim_event()))
        reports.append(report)
    with sessions.begin() as s:
        refused, stored = ingest_reports(s, AGENT, reports, fleet.rules, now=T0)
    assert (refused.outcome, refused.message) == (pb.Ack.REJECTED, "task_id is longer than 64 characters")
    assert stored.outcome == pb.Ack.STORED  # the rest of the batch is stored


AV_BASELINE = """baseline: av
version: 1
rules:
  - id: AV-FRESH
    check: av
    severity: high
    expect: {signature_age_hours: {max: 24}}
"""


def test_an_antivirus_name_longer_than_a_finding_subject_is_refused_by_name(
        sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        s.add(Agent(id=AGENT, hostname=HOST, enrolled_at=T0, cert_serial="1", cert_not_after=T0,
                    tags=["linux", "web"], max_sequence=0))
    rules = applicable_rules([load_baseline(AV_BASELINE, "av.yaml", CHECK_SPECS)], ["web"])
    reports = []
    for seq, name in ((1, "x" * 513), (2, "ClamAV")):
        report = report_pb2.Report(sequence=seq, check_id="av", check_version=1,
                                   status=common_pb2.CheckStatus(kind=common_pb2.CheckStatus.OK))  # type: ignore[arg-type]
        report.collected_at.FromDatetime(T0)
        report.av.products.add(name=name, signature_age_hours=2.0)
        reports.append(report)
    with sessions.begin() as s:
        refused, stored = ingest_reports(s, AGENT, reports, rules, now=T0)
    assert refused.outcome == pb.Ack.REJECTED and "longer than 512 characters" in refused.message
    assert stored.outcome == pb.Ack.STORED
    with sessions() as s:
        assert s.execute(select(Finding.subject).where(Finding.check_id == "av")).scalars().all() == ["ClamAV"]


# -- URLs and a database that cannot be used ---------------------------------------------------------


@pytest.mark.parametrize("url", ["postgresql://vigil@db.example/vigil", "postgres://vigil@db.example/vigil",
                                 "postgresql+psycopg://vigil@db.example/vigil"])
def test_a_postgresql_url_means_psycopg_3(url: str) -> None:
    assert parse_url(url).drivername == "postgresql+psycopg"
    assert make_engine(url).dialect.driver == "psycopg"


def test_urls_shown_to_people_carry_no_password() -> None:
    shown = safe_url("postgresql://vigil:s3cr3t@db.example:5433/vigil")
    assert "s3cr3t" not in shown and shown == "postgresql://vigil:***@db.example:5433/vigil"


@pytest.mark.parametrize(("url", "says"), [
    ("db.example:s3cr3t@vigil", "not a database URL"),
    ("postgresql+psycopg2://vigil:s3cr3t@db.example/vigil", "Vigil ships psycopg 3: write postgresql://"),
])
def test_a_url_that_cannot_be_used_is_named_without_its_password(url: str, says: str) -> None:
    try:
        import psycopg2  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        pass
    else:
        if "psycopg2" in url:
            pytest.skip("psycopg2 is installed here, so a psycopg2 URL is usable")
    with pytest.raises(UsageError) as refused:
        make_engine(url)
    assert says in str(refused.value) and "s3cr3t" not in str(refused.value)


def serve(data_dir: Path, url: str, *python: str) -> subprocess.CompletedProcess[str]:
    code = "; ".join([*python, "from controller.cli.controller import main", "raise SystemExit(main())"])
    return subprocess.run(
        [sys.executable, "-c", code, "serve", "--data-dir", str(data_dir), "--db", url,
         "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "s3cr3t" not in lines[0] and "***" in lines[0]
    return lines[0]


def test_an_unreachable_server_is_one_line_naming_the_url_without_its_password(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = one_error_line(serve(tmp_path, f"postgresql://vigil:s3cr3t@127.0.0.1:{port}/vigil"))
    assert f"cannot open the database postgresql+psycopg://vigil:***@127.0.0.1:{port}/vigil" in line
    assert "refused" in line.lower()


def test_a_refused_login_is_one_line_naming_the_url_without_its_password(tmp_path: Path, pg_url: str) -> None:
    url = make_url(pg_url).set(username="nobody_here", password="s3cr3t")
    line = one_error_line(serve(tmp_path, url.render_as_string(hide_password=False)))
    assert "cannot open the database" in line and "nobody_here" in line


def test_a_missing_driver_says_what_to_install(tmp_path: Path) -> None:
    proc = serve(tmp_path, "postgresql://vigil:s3cr3t@db.example/vigil", "import sys",
                 "sys.modules['psycopg'] = None")
    line = one_error_line(proc)
    assert proc.returncode == 2
    assert "vigil[controller,postgresql]" in line and "psycopg" in line


def test_a_url_of_another_database_is_refused_by_name(tmp_path: Path) -> None:
    line = one_error_line(serve(tmp_path, "mysql://vigil:s3cr3t@db.example/vigil"))
    assert "unsupported database 'mysql'" in line
