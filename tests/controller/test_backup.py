"""The controller's own SQLite database: refused when damaged, whole in controller.db after a clean stop,
backed up while it runs and restored; a store that cannot be written answers 503, never a bare 500."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import shutil
import sqlite3
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from common import sqlite_integrity
from controller.cli.controller import main
from controller.core import Controller, ControllerConfig, DataDirLock
from controller.domain.enrollment import create_token
from controller.domain.users import create_api_key, create_user
from controller.rest.health import MIN_FREE_BYTES
from controller.server import Running, build_app, serve
from controller.storage.models import AuditEntry
from controller.storage.store import DamagedDatabase
from tests.tmpfs import small_tmpfs

PASSWORD = "Correct-Horse-42-battery"
TABLES = ("audit_log", "enrollment_tokens", "users", "api_keys", "baselines")


def _open(data_dir: Path) -> Controller:
    return Controller.open(ControllerConfig(data_dir=data_dir))


def _populate(ctl: Controller, n: int = 5) -> None:
    """Users, keys and tokens, each in its own transaction (so the WAL holds several commits), all audited."""
    with ctl.sessions.begin() as s:
        create_user(s, "ann", "admin", PASSWORD, "test")
    for _ in range(n):
        with ctl.sessions.begin() as s:
            create_api_key(s, "ann", "test")
            create_token(s, ctl.ca, dt.timedelta(hours=1), ["linux"], "test")


def _drop(ctl: Controller) -> None:
    """Let go of a controller without a clean stop (its WAL stays as a crash would leave it)."""
    ctl.writer.shutdown()


def _counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
    try:
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}
    finally:
        conn.close()


def _audit_entries_sqlite_sees(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        if conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'audit_log'").fetchone()[0] == 0:
            return 0
        return int(conn.execute("SELECT count(*) FROM audit_log").fetchone()[0])
    finally:
        conn.close()


def _snapshot(src: Path, dest: Path) -> Path:
    """Copy a data directory's database, WAL and CA as they are on disk now (as after a power cut)."""
    dest.mkdir()
    for name in ("controller.db", "controller.db-wal"):
        if (src / name).exists():
            shutil.copyfile(src / name, dest / name)
    shutil.copytree(src / "pki", dest / "pki")
    return dest


def _flip_early_committed_frame(wal: Path) -> int:
    """Flip one byte in the page of the first committed frame that later commits follow; its number."""
    data = bytearray(wal.read_bytes())
    page = struct.unpack(">I", data[8:12])[0]
    size = 24 + page
    commits = [n for n, off in enumerate(range(32, len(data) - size + 1, size), start=1)
               if struct.unpack(">I", data[off + 4:off + 8])[0]]
    assert len(commits) >= 2, "the WAL should hold several committed transactions"
    frame = commits[0]
    data[32 + (frame - 1) * size + 24 + 200] ^= 0x01
    wal.write_bytes(bytes(data))
    return frame


@pytest.fixture
def crashed(tmp_path: Path) -> Iterator[Path]:
    """A data directory whose controller wrote several transactions and then stopped without a checkpoint."""
    live = tmp_path / "live"
    ctl = _open(live)
    _populate(ctl)
    assert (live / "controller.db-wal").stat().st_size > 0
    yield _snapshot(live, tmp_path / "crashed")
    _drop(ctl)


# -- integrity at start ---------------------------------------------------------------------------------


def test_a_damaged_wal_frame_is_refused_before_anything_opens_it(
        crashed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = _counts(crashed / "controller.db")
    damaged = _snapshot(crashed, tmp_path / "damaged")
    frame = _flip_early_committed_frame(damaged / "controller.db-wal")
    before = {p.name: p.read_bytes() for p in damaged.iterdir() if p.is_file()}
    # What the check prevents: SQLite opens a copy of it without an error, and most rows are gone.
    silent = _snapshot(damaged, tmp_path / "silent")
    assert _audit_entries_sqlite_sees(silent / "controller.db") < expected["audit_log"]

    with pytest.raises(DamagedDatabase) as err:
        _open(damaged)
    message = str(err.value)
    assert f"frame {frame} is damaged" in message and "controller.db-wal" in message
    assert "will not serve a damaged database" in message
    assert f"vigil-controller restore --data-dir {damaged} --from BACKUP" in message
    assert "docs/operations.md#restore" in message
    assert "\n### Restore\n" in (Path(__file__).parents[2] / "docs" / "operations.md").read_text()  # the anchor
    # Nothing was moved, migrated or checkpointed: the operator decides.
    assert {p.name: p.read_bytes() for p in damaged.iterdir() if p.name in before} == before

    # serve and the admin commands alike: exit 1, one line.
    for argv in (["serve", "--data-dir", str(damaged), "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"],
                 ["audit", "verify", "--data-dir", str(damaged)]):
        assert main(argv) == 1
        err_text = capsys.readouterr().err
        assert err_text.count("\n") == 1 and "will not serve a damaged database" in err_text, err_text
    assert _counts(crashed / "controller.db") == expected  # the untouched copy opens whole


def test_a_damaged_page_in_controller_db_is_refused(tmp_path: Path) -> None:
    ctl = _open(tmp_path / "d")
    _populate(ctl)
    ctl.close()
    db = tmp_path / "d" / "controller.db"
    conn = sqlite3.connect(db)
    root, page = conn.execute("SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_master "
                              "WHERE name = 'audit_log'").fetchone()
    conn.close()
    data = bytearray(db.read_bytes())
    data[(root - 1) * page + 3] ^= 0xFF  # the number of cells on the audit log's root page
    db.write_bytes(bytes(data))
    with pytest.raises(DamagedDatabase, match="will not serve a damaged database"):
        _open(tmp_path / "d")


def test_a_damaged_index_entry_in_controller_db_is_refused(tmp_path: Path) -> None:
    ctl = _open(tmp_path / "d")
    _populate(ctl)
    ctl.close()
    db = tmp_path / "d" / "controller.db"
    conn = sqlite3.connect(db)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'users'").fetchone()
    conn.close()
    data = bytearray(db.read_bytes())
    at = (root - 1) * page + bytes(data[(root - 1) * page:root * page]).index(b"ann")
    data[at + 1] ^= 0x01  # the index now names a user the table does not hold; quick_check cannot see it
    db.write_bytes(bytes(data))
    assert sqlite_integrity.check(db) is None  # quick_check alone passes it
    with pytest.raises(DamagedDatabase, match=r"integrity check.*will not serve a damaged database"):
        _open(tmp_path / "d")


def test_a_torn_uncommitted_tail_is_not_damage(crashed: Path) -> None:
    wal = crashed / "controller.db-wal"
    wal.write_bytes(wal.read_bytes()[:-1000])  # the last frame cut short, as by a crash mid-write
    expected = _counts(crashed / "controller.db")
    ctl = _open(crashed)
    ctl.close()
    assert _counts(crashed / "controller.db") == expected


def test_a_damaged_last_commit_starts_with_a_warning_naming_the_frame(
        crashed: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A flipped byte in the last commit frame looks exactly like a crash during that commit: the
    controller starts (refusing would strand every power cut) and says so, never silently."""
    wal = crashed / "controller.db-wal"
    data = bytearray(wal.read_bytes())
    size = 24 + struct.unpack(">I", data[8:12])[0]
    last = (len(data) - 32) // size
    assert struct.unpack(">I", data[32 + (last - 1) * size + 4:32 + (last - 1) * size + 8])[0] != 0
    data[32 + (last - 1) * size + 24 + 200] ^= 0x01
    wal.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="controller.storage.store"):
        ctl = _open(crashed)
        ctl.close()
    warned = [r.getMessage() for r in caplog.records if r.name == "controller.storage.store"]
    assert len(warned) == 1, warned
    assert f"frame {last}, in the last transaction, fails its checksum" in warned[0]
    assert "controller.db-wal" in warned[0] and "compare with the last backup" in warned[0]
    # ... and in the audit log, once: the first write replaced the frame SQLite ignored.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="controller.storage.store"):
        again = _open(crashed)
    try:
        with again.sessions() as s:
            rows = s.execute(select(AuditEntry).where(
                AuditEntry.action == "store.last_transaction_ignored")).scalars().all()
        assert len(rows) == 1 and f"frame {last}" in rows[0].details["notice"]
        assert rows[0].object_id == str(crashed / "controller.db")
        assert not [r for r in caplog.records if r.name == "controller.storage.store"]
    finally:
        again.close()


def test_postgresql_is_not_checked_as_a_file(tmp_path: Path) -> None:
    from controller.storage.store import check_before_open

    check_before_open("postgresql://vigil@db.invalid/vigil", tmp_path)  # no file, no error, no connection


# -- clean stop ----------------------------------------------------------------------------------------


def test_after_a_clean_stop_controller_db_alone_holds_everything(tmp_path: Path) -> None:
    data = tmp_path / "d"
    cfg = ControllerConfig(data_dir=data, grpc_addr="127.0.0.1:0", enroll_addr="127.0.0.1:0",
                           http_addr="127.0.0.1:0")
    seen: dict[str, Any] = {}

    async def run() -> None:
        stop = asyncio.Event()

        def ready(r: Running) -> None:
            _populate(r.controller)
            seen["wal"] = (data / "controller.db-wal").stat().st_size
            seen["counts"] = _counts(data / "controller.db")
            stop.set()

        await serve(cfg, ready, stop)

    asyncio.run(run())
    assert seen["wal"] > 0  # while serving, the rows were in the WAL
    wal = data / "controller.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(data / "controller.db", alone / "controller.db")
    assert _counts(alone / "controller.db") == seen["counts"]
    assert seen["counts"]["audit_log"] > 10


# -- backup and restore --------------------------------------------------------------------------------


def _audit_actions(db: Path) -> list[str]:
    conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
    try:
        return [str(r[0]) for r in conn.execute("SELECT action FROM audit_log ORDER BY seq")]
    finally:
        conn.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Path, Controller]]:
    """A controller that keeps its database open (as `serve` does) while the commands run beside it."""
    ctl = _open(tmp_path / "live")
    _populate(ctl)
    yield tmp_path / "live", ctl
    ctl.close()
    _drop(ctl)


def test_backup_while_running_then_restore_into_a_fresh_directory(
        live: tuple[Path, Controller], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, ctl = live
    expected = _counts(data / "controller.db")
    out = tmp_path / "backups" / "vigil.db"
    out.parent.mkdir()
    assert main(["backup", "--data-dir", str(data), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"audit log verified: {expected['audit_log']} entries" in text
    assert f"users {expected['users']}" in text and f"api_keys {expected['api_keys']}" in text
    assert f"sha256 {_sha256(out)}" in text and f"{data / 'pki'}" in text
    assert sorted(p.name for p in out.parent.iterdir()) == ["vigil.db"]  # one self-contained file
    assert _counts(out) == expected
    assert _audit_actions(data / "controller.db")[-1] == "database.backup"  # recorded in the live database

    # The controller goes on writing; a second backup to the same file needs --force.
    _populate_more(ctl)
    assert main(["backup", "--data-dir", str(data), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and _counts(out) == expected

    fresh = tmp_path / "fresh"
    assert main(["restore", "--data-dir", str(fresh), "--from", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"audit log verified: {expected['audit_log']} entries" in text and "pki" in text
    shutil.copytree(data / "pki", fresh / "pki")
    restored = _open(fresh)  # as `serve` opens it: checked, migrated
    restored.close()
    _drop(restored)
    counts = _counts(fresh / "controller.db")
    assert counts == {**expected, "audit_log": expected["audit_log"] + 1}
    assert _audit_actions(fresh / "controller.db")[-1] == "database.restore"
    assert main(["audit", "verify", "--data-dir", str(fresh)]) == 0
    assert f"verified: {expected['audit_log'] + 1} entries" in capsys.readouterr().out


def _populate_more(ctl: Controller) -> None:
    with ctl.sessions.begin() as s:
        create_token(s, ctl.ca, dt.timedelta(hours=1), [], "test")


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_restore_keeps_the_replaced_database_and_refuses_while_a_controller_runs(
        live: tuple[Path, Controller], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = live
    out = tmp_path / "b.db"
    assert main(["backup", "--data-dir", str(data), "--out", str(out)]) == 0
    target = tmp_path / "target"
    other = _open(target)
    _populate(other, 1)
    other.close()
    _drop(other)
    before = _counts(target / "controller.db")

    lock = DataDirLock(target).acquire()  # a controller serving there
    try:
        assert main(["restore", "--data-dir", str(target), "--from", str(out)]) == 2
        assert "in use by another controller" in capsys.readouterr().err
    finally:
        lock.release()
    assert _counts(target / "controller.db") == before

    capsys.readouterr()
    assert main(["restore", "--data-dir", str(target), "--from", str(out)]) == 0
    (kept,) = [p for p in target.iterdir()
               if p.name.startswith("controller.db.replaced-") and not p.name.endswith(("-wal", "-shm"))]
    assert not (target / "controller.db-wal").exists()  # the replaced database's WAL went with it
    assert _counts(kept) == before and kept.name in capsys.readouterr().out
    assert _counts(target / "controller.db")["audit_log"] == _counts(out)["audit_log"] + 1


@pytest.mark.parametrize("spoil, message", [
    (lambda p: p.write_bytes(b"not a database at all" * 100), "file is not a database"),
    (lambda p: _plain_sqlite(p), "not a Vigil controller's"),
    (lambda p: _tamper_audit(p), "audit log does not verify"),
    (lambda p: _future_revision(p), "schema revision 9999_future is not one this version"),
], ids=["garbage", "another database", "tampered audit log", "newer schema"])
def test_restore_refuses_a_file_that_is_not_a_sound_controller_database(
        live: tuple[Path, Controller], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        spoil: Callable[[Path], None], message: str) -> None:
    data, _ = live
    source = tmp_path / "b.db"
    assert main(["backup", "--data-dir", str(data), "--out", str(source)]) == 0
    spoil(source)
    before = (data / "controller.db").stat().st_mtime_ns, _counts(data / "controller.db")
    capsys.readouterr()
    assert main(["restore", "--data-dir", str(data.parent / "target"), "--from", str(source)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (data.parent / "target" / "controller.db").exists()
    assert ((data / "controller.db").stat().st_mtime_ns, _counts(data / "controller.db")) == before


def _plain_sqlite(path: Path) -> None:
    path.unlink()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()


def _tamper_audit(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    conn.commit()
    conn.close()


def _future_revision(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    conn.commit()
    conn.close()


def test_backup_of_a_database_whose_audit_log_is_broken_writes_nothing(
        live: tuple[Path, Controller], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = live
    _tamper_audit(data / "controller.db")
    out = tmp_path / "b.db"
    assert main(["backup", "--data-dir", str(data), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"the copy of {data / 'controller.db'} does not check" in err and "audit log does not verify" in err
    assert "partial" not in err and err.count("\n") == 1
    assert list(tmp_path.glob("*b.db*")) == []


def test_backup_of_postgresql_prints_the_pg_dump_command_without_the_password(
        live: tuple[Path, Controller], capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = live
    code = main(["backup", "--data-dir", str(data), "--db", "postgresql://vigil:s3cret@db.example:5433/vigil",
                 "--out", "/backups/vigil.dump"])
    err = capsys.readouterr().err
    assert code == 1
    assert ("pg_dump --format=custom --file=/backups/vigil.dump --host=db.example --port=5433 --username=vigil "
            "--dbname=vigil") in err
    assert "s3cret" not in err and "pki" in err


# -- a store that cannot be written --------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Controller, TestClient, str]]:
    ctl = _open(tmp_path / "d")
    with ctl.sessions.begin() as s:
        create_user(s, "ann", "admin", PASSWORD, "test")
        key = create_api_key(s, "ann", "test")
    with TestClient(build_app(ctl), follow_redirects=False) as client:
        yield ctl, client, key
    ctl.close()
    _drop(ctl)


def _every_connection(ctl: Controller, pragma: str) -> None:
    """Apply a real SQLite limit to every connection the controller opens from now on."""
    engine = ctl.sessions.kw["bind"]
    engine.dispose()

    def apply(conn: Any, _record: Any) -> None:
        conn.execute(pragma)
        conn.commit()  # PostgreSQL: a SET in a transaction rolled back would be undone

    event.listen(engine, "connect", apply)


def test_a_full_database_answers_503_with_one_message_and_changes_nothing(
        api: tuple[Controller, TestClient, str]) -> None:
    ctl, client, key = api
    headers = {"Authorization": f"Bearer {key}"}
    url = "/api/v1/baselines/tw-securities-linux"
    before = client.get(url, headers=headers).json()
    pages = sqlite3.connect(ctl.config.data_dir / "controller.db").execute("PRAGMA page_count").fetchone()[0]
    _every_connection(ctl, f"PRAGMA max_page_count={pages}")  # SQLite's own "database or disk is full"
    good = before["source"].replace(f"version: {before['version']}\n", f"version: {before['version'] + 1}\n", 1)
    good += "# " + "padding " * 4000 + "\n"
    r = client.put(url, content=good, headers={**headers, "Content-Type": "application/yaml"})
    assert r.status_code == 503, r.text
    assert "database or disk is full" in r.json()["detail"] and "nothing was changed" in r.json()["detail"]
    assert r.headers["Retry-After"]
    assert client.get(url, headers=headers).json()["version"] == before["version"]


def test_a_read_only_database_fails_healthz_and_the_web_ui_shows_an_error_page(
        api: tuple[Controller, TestClient, str]) -> None:
    ctl, client, _ = api
    assert client.get("/api/v1/healthz").json()["status"] == "ok"
    _every_connection(ctl, "PRAGMA query_only=ON")  # every write: "attempt to write a readonly database"
    r = client.get("/api/v1/healthz")
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable" and "readonly database" in r.json()["detail"]
    page = client.get("/login")
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    r = client.post("/login", data={"username": "ann", "password": PASSWORD, "csrf_token": csrf})
    assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")
    assert "Storage unavailable" in r.text and "readonly database" in r.text


def test_a_read_only_postgresql_database_fails_healthz_and_writes_answer_503(tmp_path: Path, pg_url: str) -> None:
    ctl = Controller.open(ControllerConfig(data_dir=tmp_path / "d", db_url=pg_url))
    try:
        with ctl.sessions.begin() as s:
            create_user(s, "ann", "admin", PASSWORD, "test")
            key = create_api_key(s, "ann", "test")
        with TestClient(build_app(ctl)) as client:
            assert client.get("/api/v1/healthz").status_code == 200
            _every_connection(ctl, "SET default_transaction_read_only = on")  # as on a read-only standby
            r = client.get("/api/v1/healthz")
            assert r.status_code == 503 and "the database is read-only" in r.json()["detail"]
            headers = {"Authorization": f"Bearer {key}"}
            url = "/api/v1/baselines/tw-securities-linux"
            before = client.get(url, headers=headers).json()
            good = before["source"].replace(f"version: {before['version']}\n", f"version: {before['version'] + 1}\n", 1)
            r = client.put(url, content=good, headers={**headers, "Content-Type": "application/yaml"})
            assert r.status_code == 503 and "read-only" in r.json()["detail"], r.text
            assert client.get(url, headers=headers).json()["version"] == before["version"]
    finally:
        ctl.close()
        _drop(ctl)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB file system (tmpfs), mounted here and unmounted afterwards."""
    with small_tmpfs(tmp_path / "small", 8) as mnt:
        yield mnt


def test_a_full_file_system_fails_healthz_and_writes_answer_503(small_disk: Path) -> None:
    ctl = _open(small_disk / "d")
    try:
        with ctl.sessions.begin() as s:
            create_user(s, "ann", "admin", PASSWORD, "test")
            key = create_api_key(s, "ann", "test")
        headers = {"Authorization": f"Bearer {key}"}
        with TestClient(build_app(ctl)) as client:
            r = client.get("/api/v1/healthz")
            assert r.status_code == 503 and r.json()["free_bytes"] < MIN_FREE_BYTES
            assert f"free on the file system of {small_disk / 'd'}" in r.json()["detail"]
            with open(small_disk / "filler", "wb") as f, pytest.raises(OSError):  # fill what is left
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            url = "/api/v1/baselines/tw-securities-linux"
            before = client.get(url, headers=headers).json()
            good = before["source"].replace(f"version: {before['version']}\n",
                                            f"version: {before['version'] + 1}\n", 1)
            r = client.put(url, content=good + "# " + "padding " * 4000 + "\n",
                           headers={**headers, "Content-Type": "application/yaml"})
            assert r.status_code == 503, r.text
            assert "database or disk is full" in r.json()["detail"]
            (small_disk / "filler").unlink()
            assert client.get(url, headers=headers).json()["version"] == before["version"]
    finally:
        with contextlib.suppress(FileNotFoundError):
            (small_disk / "filler").unlink()
        ctl.close()
        _drop(ctl)


def test_vigil_up_refuses_a_damaged_database_too(
        crashed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli.operator import main as vigil

    up_dir = tmp_path / "vigil-data"
    up_dir.mkdir()
    shutil.copytree(crashed, up_dir / "controller")
    _flip_early_committed_frame(up_dir / "controller" / "controller.db-wal")
    assert vigil(["up", "--data-dir", str(up_dir), "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vigil: error: ") and err.count("\n") == 1
    assert "will not serve a damaged database" in err and f"--data-dir {up_dir / 'controller'}" in err
    assert not (up_dir / "admin-password").exists()


def test_restore_as_root_gives_the_database_the_data_directory_s_owner(
        live: tuple[Path, Controller], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    data, _ = live
    out = tmp_path / "b.db"
    assert main(["backup", "--data-dir", str(data), "--out", str(out)]) == 0
    target = tmp_path / "target"
    target.mkdir()
    os.chown(target, 4242, 4343)  # the controller's own user
    assert main(["restore", "--data-dir", str(target), "--from", str(out)]) == 0
    st = (target / "controller.db").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (4242, 4343, 0o600)
    assert (target / "controller.lock").stat().st_uid == 4242
