"""The controller's own database under faults, on real processes: killed with SIGKILL, a flipped byte in a
copy of its WAL, a clean stop, a backup while it serves and a restore into a new directory.

Each case ends with the clear refusal or with every row there: never a controller served truncated.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from proto.vigil.v1 import agent_service_pb2 as pb
from tests.e2e.harness import ROOT, AgentProc, AgentStream, Controller, cli, ports_report, read_only_db, wait_for
from tests.tmpfs import small_tmpfs

TABLES = ("results", "tickets", "ticket_events", "findings", "audit_log", "agents", "users", "api_keys")


def counts(db: Path) -> dict[str, int]:
    """Rows per table as SQLite reads the file (with its WAL), read-only."""
    with read_only_db(db) as conn:
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}


def report_and_work(ctl: Controller, agent_dir: Path, first: int, n: int) -> None:
    """``n`` reports, one listener each on a port of its own (each a ticket), every one acknowledged,
    then tickets worked over the API (audited)."""
    with AgentStream.of(ctl.address, agent_dir) as stream:
        stream.hello()
        for seq in range(first, first + n):
            stream.send(ports_report(seq, port=20000 + seq))
            stream.next("ack")
    for t in ctl.api("GET", "/tickets?check=ports&status=open")[:5]:
        ctl.api("POST", f"/tickets/{t['id']}/comments", {"text": "looking"})


def rows_sqlite_sees(db: Path, table: str) -> int:
    with read_only_db(db) as conn:
        if not conn.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]:
            return 0
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def flip_early_committed_frame(wal: Path) -> int:
    """Flip one byte in the page of the first committed frame that later commits follow; its number."""
    data = bytearray(wal.read_bytes())
    size = 24 + struct.unpack(">I", data[8:12])[0]
    commits = [n for n, off in enumerate(range(32, len(data) - size + 1, size), start=1)
               if struct.unpack(">I", data[off + 4:off + 8])[0]]
    assert len(commits) >= 10, f"the WAL should hold many committed transactions, not {len(commits)}"
    data[32 + (commits[0] - 1) * size + 24 + 100] ^= 0x01
    wal.write_bytes(bytes(data))
    return commits[0]


def audit_entries(data_dir: Path) -> int:
    out = cli("vigil-controller", "audit", "verify", "--data-dir", str(data_dir)).stdout
    m = re.search(r"audit log verified: (\d+) entries", out)
    assert m, out
    return int(m.group(1))


def test_a_flipped_wal_byte_is_refused_and_the_intact_copy_serves_every_row(tmp_path: Path) -> None:
    ctl = Controller(tmp_path / "live")
    ctl.start()
    agent_dir = tmp_path / "agent"
    try:
        AgentProc(agent_dir).enroll(ctl)
        report_and_work(ctl, agent_dir, 1, 40)
        served = len(ctl.api("GET", "/tickets?limit=1000"))
    finally:
        ctl.kill9()
    wal = ctl.data_dir / "controller.db-wal"
    assert wal.stat().st_size > 0  # killed: what it stored is (partly) in the WAL only

    intact = tmp_path / "intact"
    shutil.copytree(ctl.data_dir, intact)
    damaged = tmp_path / "damaged"
    shutil.copytree(ctl.data_dir, damaged)
    expected = counts(intact / "controller.db")
    assert expected["results"] >= 40 and expected["tickets"] == served >= 40 and expected["audit_log"] > 40
    frame = flip_early_committed_frame(damaged / "controller.db-wal")
    # What the refusal prevents: SQLite opens a copy of the damaged files without an error, rows gone.
    silent = tmp_path / "silent"
    shutil.copytree(damaged, silent)
    assert rows_sqlite_sees(silent / "controller.db", "audit_log") < expected["audit_log"]

    # serve refuses the damaged copy at once, with what is wrong and how to restore; so does an admin command.
    refused = subprocess.run(
        [sys.executable, "-m", "controller.cli.controller", "serve", "--data-dir", str(damaged),
         "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1, refused.stderr
    line = refused.stderr.strip()
    assert "\n" not in line, refused.stderr
    assert f"frame {frame} is damaged" in line and "will not serve a damaged database" in line
    assert f"vigil-controller restore --data-dir {damaged} --from BACKUP" in line and "#restore" in line
    verify = cli("vigil-controller", "audit", "verify", "--data-dir", str(damaged), check=False)
    assert verify.returncode == 1 and "will not serve a damaged database" in verify.stderr

    # The untouched copy serves every row.
    again = Controller(intact)
    again.key = ctl.key  # the copy has the same users and keys
    again.start()
    try:
        assert len(again.api("GET", "/tickets?limit=1000")) == served
        assert audit_entries(intact) >= expected["audit_log"]
    finally:
        again.stop()
    after = counts(intact / "controller.db")
    # A clean stop empties the WAL into controller.db: the file alone holds everything.
    assert not (intact / "controller.db-wal").exists() or (intact / "controller.db-wal").stat().st_size == 0
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(intact / "controller.db", alone / "controller.db")
    assert counts(alone / "controller.db") == after
    assert after["results"] == expected["results"] and after["tickets"] == expected["tickets"]


def test_backup_while_serving_then_restore_into_a_new_directory(tmp_path: Path) -> None:
    ctl = Controller(tmp_path / "live")
    ctl.start()
    agent_dir = tmp_path / "agent"
    backup = tmp_path / "vigil-backup.db"
    try:
        AgentProc(agent_dir).enroll(ctl)
        report_and_work(ctl, agent_dir, 1, 20)
        # The backup is taken while an agent goes on reporting.
        feeding = threading.Thread(target=report_and_work, args=(ctl, agent_dir, 21, 60))
        feeding.start()
        try:
            made = cli("vigil-controller", "backup", "--data-dir", str(ctl.data_dir), "--out", str(backup))
        finally:
            feeding.join(120)
        live_after = counts(ctl.data_dir / "controller.db")
    finally:
        ctl.stop()
    in_backup = counts(backup)
    assert f"results {in_backup['results']}" in made.stdout and f"tickets {in_backup['tickets']}" in made.stdout
    assert f"audit log verified: {in_backup['audit_log']} entries" in made.stdout
    assert 20 <= in_backup["results"] <= live_after["results"] == 80

    fresh = tmp_path / "restored"
    restored = cli("vigil-controller", "restore", "--data-dir", str(fresh), "--from", str(backup))
    assert f"audit log verified: {in_backup['audit_log']} entries" in restored.stdout
    shutil.copytree(ctl.data_dir / "pki", fresh / "pki")  # the CA, backed up beside the database
    back = Controller(fresh)
    back.key = ctl.key
    back.start()
    try:
        assert len(back.api("GET", "/tickets?limit=1000")) == in_backup["tickets"]
        now = counts(fresh / "controller.db")
        assert {t: now[t] for t in TABLES if t != "audit_log"} == {t: in_backup[t] for t in TABLES if t != "audit_log"}
        assert audit_entries(fresh) == now["audit_log"] == in_backup["audit_log"] + 1  # + the restore
    finally:
        back.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 96 MiB file system (tmpfs) for the controller's data, unmounted afterwards."""
    with small_tmpfs(tmp_path / "disk", 96) as mnt:
        yield mnt


def health(ctl: Controller) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(ctl.url + "/api/v1/healthz", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def fill(path: Path) -> None:
    with open(path, "wb") as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * (1 << 20))
            f.flush()


def test_a_full_disk_fails_healthz_answers_503_and_acknowledges_no_report(
        small_disk: Path, tmp_path: Path) -> None:
    ctl = Controller(small_disk / "controller")
    ctl.start()
    agent_dir = tmp_path / "agent"
    try:
        AgentProc(agent_dir).enroll(ctl)
        report_and_work(ctl, agent_dir, 1, 3)
        stored = counts(ctl.data_dir / "controller.db")["results"]
        fill(small_disk / "filler")

        status, body = health(ctl)
        assert status == 503 and body["status"] == "unavailable", body
        assert "free on the file system" in str(body["detail"]) or "cannot be written" in str(body["detail"])
        # A write over the API: 503 with one message in the error body, not a bare 500.
        req = urllib.request.Request(ctl.url + "/api/v1/tickets?limit=1", headers={
            "Authorization": f"Bearer {ctl.key}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            tid = json.loads(r.read())[0]["id"]
        req = urllib.request.Request(
            ctl.url + f"/api/v1/tickets/{tid}/comments", method="POST",
            data=json.dumps({"text": "x" * 20000}).encode(),
            headers={"Authorization": f"Bearer {ctl.key}", "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=30)
        assert refused.value.code == 503
        assert "database or disk is full" in json.loads(refused.value.read())["detail"]

        # Reports the store cannot take are not acknowledged: the agent keeps them.
        with AgentStream.of(ctl.address, agent_dir) as stream:
            stream.hello()
            for seq in range(4, 8):
                stream.send(ports_report(seq, port=21000 + seq))
            stream.ended(timeout=60)
            with pytest.raises(AssertionError):
                stream.next("ack", timeout=0.1)
        assert counts(ctl.data_dir / "controller.db")["results"] == stored

        (small_disk / "filler").unlink()
        wait_for("/healthz ok again", lambda: health(ctl)[0] == 200)
        with AgentStream.of(ctl.address, agent_dir) as stream:  # the agent sends them again
            stream.hello()
            for seq in range(4, 8):
                stream.send(ports_report(seq, port=21000 + seq))
                assert stream.next("ack").outcome == pb.Ack.STORED
        assert counts(ctl.data_dir / "controller.db")["results"] == stored + 4
    finally:
        (small_disk / "filler").unlink(missing_ok=True)
        ctl.stop()
