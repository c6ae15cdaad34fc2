"""Faults on the agent's side, on real processes: a spool that overflows while the controller is down,
a spool deleted while the agent was stopped, a damaged one. Nothing may be lost without the controller
being told: every file change arrives, the overflow tickets with the true count and resolves once the
agent has collected everything again, a recreated spool's results are stored and the recreation ticketed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proto.vigil.v1 import report_pb2
from tests.e2e.harness import AgentProc, Controller, read_only_db, restart, wait_for

BASELINE = """baseline: agent-faults
version: 1
rules:
  - id: AGENT-HEALTH
    check: agent
    severity: high
    interval: 10s
    expect: {{max_silence: 5m, dropped_records: {{max: 0}}}}
  - id: WEBROOT
    check: fim
    severity: critical
    interval: 1h
    params:
      paths: ["{root}"]
      coalesce_ms: 50
    expect: {{unexpected_changes: 0}}
"""
N = 300


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Controller, AgentProc, str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("<h1>Welcome</h1>\n")
    ctl = Controller(tmp_path / "controller")
    ctl.start()
    agent = AgentProc(tmp_path / "agent")
    try:
        (tmp_path / "b.yaml").write_text(BASELINE.format(root=root))
        ctl.vigil("baseline", "apply", str(tmp_path / "b.yaml"))
        agent_id = agent.enroll(ctl)
        yield ctl, agent, agent_id, root
    finally:
        agent.stop()
        ctl.stop()


def results(ctl: Controller, agent_id: str, check_id: str) -> list[report_pb2.Report]:
    """The reports of ``check_id`` the controller stored for the agent, as they came over the wire."""
    with read_only_db(ctl.data_dir / "controller.db") as db:
        rows = db.execute("SELECT raw FROM results WHERE agent_id=? AND check_id=? ORDER BY id",
                          (agent_id, check_id)).fetchall()
    return [report_pb2.Report.FromString(bytes(raw)) for (raw,) in rows]


def fim_paths(ctl: Controller, agent_id: str) -> set[str]:
    with read_only_db(ctl.data_dir / "controller.db") as db:
        rows = db.execute("SELECT facts FROM results WHERE agent_id=? AND check_id='fim'", (agent_id,)).fetchall()
    return {e["path"] for (facts,) in rows for e in json.loads(facts).get("events", [])}


def ticket_of(ctl: Controller, agent_id: str, subject: str, rule_id: str | None = None) -> dict[str, Any] | None:
    found = [t for t in ctl.api("GET", "/tickets?status=" + ",".join(
        ("open", "acknowledged", "in_progress", "resolved", "closed", "false_positive")))
        if t["asset"] == agent_id and t["subject"] == subject and rule_id in (None, t["rule_id"])]
    return found[0] if found else None


def spool_meta(data_dir: Path, key: str) -> int:
    with read_only_db(data_dir / "spool.db") as db:
        return int(db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])


def test_overflow_while_the_controller_is_down_loses_no_file_change(stack: tuple[Controller, AgentProc, str, Path],
                                                                     tmp_path: Path) -> None:
    ctl, agent, agent_id, root = stack
    # A spool of 48 KiB: a few dozen real-time results, far fewer than 300 changes make.
    config = tmp_path / "agent.yaml"
    config.write_text("spool_max_mb: 0.046875\n")
    agent.start_with(config)
    wait_for("the fim baseline", lambda: results(ctl, agent_id, "fim"), timeout=60)

    ctl.stop()
    expected = set()
    for i in range(N):
        path = root / "uploads" / f"file-{i:03d}.php"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"<?php echo {i}; // {'padding ' * 20} ?>\n")
        expected.add(str(path))
    # The agent noticed and its spool overflowed before the controller comes back.
    wait_for("the spool to drop results", lambda: spool_meta(agent.data_dir, "dropped") > 0, timeout=60)

    restart(ctl)
    missing: set[str] = set()

    def all_arrived() -> bool:
        missing.clear()
        missing.update(expected - fim_paths(ctl, agent_id))
        return not missing

    wait_for(f"all {N} file creations at the controller", all_arrived, timeout=180, every=0.5)

    def recovered() -> report_pb2.Report | None:
        healths = [r for r in results(ctl, agent_id, "agent") if r.agent.dropped_records > 0]
        return next((r for r in reversed(healths) if r.agent.pending_recovery == 0), None)

    health = wait_for("a health result saying the overflow recovered", recovered, timeout=120, every=0.5)
    assert health.agent.dropped_total >= health.agent.dropped_records > 0
    assert health.agent.spool_incarnation == health.incarnation != ""
    assert fim_paths(ctl, agent_id) >= expected, f"missing: {sorted(missing)[:5]}"

    # The controller judged it with the true count, and the ticket resolved by itself.
    count = health.agent.dropped_records
    said = f"{count} results dropped while the spool was full were collected again"
    (finding,) = [f for f in ctl.api("GET", f"/agents/{agent_id}")["findings"]
                  if f["subject"] == "spool" and f["rule_id"] == "AGENT-HEALTH"]
    assert (finding["status"], finding["message"]) == ("pass", said)
    assert finding["evidence"]["dropped_records"] == count and finding["evidence"]["pending_recovery"] == 0
    # Ticketed with the count whether the controller heard of the overflow while it lasted or only once the
    # agent had collected everything again (its health results are dropped too while the spool is full).
    failing = [r for r in results(ctl, agent_id, "agent") if r.agent.dropped_records > 0 and r.agent.pending_recovery]
    ticket = wait_for("the overflow ticket resolved", lambda: (t := ticket_of(ctl, agent_id, "spool", "AGENT-HEALTH"))
                      and t["status"] == "resolved" and t, timeout=30)
    detail = ctl.api("GET", f"/tickets/{ticket['id']}")
    assert detail["resolution"] == f"automatically resolved: {said}"
    told = failing[-1].agent.dropped_records if failing else count
    assert f"dropped {told} result(s)" in detail["title"]


def test_a_deleted_spool_starts_a_new_incarnation_the_agent_tells(stack: tuple[Controller, AgentProc, str, Path]
                                                                  ) -> None:
    ctl, agent, agent_id, _root = stack
    agent.start()
    first = wait_for("a stored report", lambda: results(ctl, agent_id, "agent"), timeout=60)
    old = first[0].incarnation
    assert len(old) == 32
    agent.stop()
    for p in agent.data_dir.glob("spool.db*"):
        p.unlink()

    log_start = agent.log.stat().st_size
    agent.start()

    def hello_line() -> str | None:
        text = agent.log.read_text()[log_start:]
        return next((line for line in text.splitlines() if "connected to controller" in line), None)

    line = wait_for("the agent to connect again", hello_line, timeout=60)
    with read_only_db(agent.data_dir / "spool.db") as db:
        new = str(db.execute("SELECT value FROM info WHERE key='incarnation'").fetchone()[0])
        note = str(db.execute("SELECT value FROM info WHERE key='note'").fetchone()[0])
    assert new != old and len(new) == 32
    assert note.startswith("spool.db was missing (deleted?)") and "lost" in note
    # The Hello carried both (the agent logs what it sent).
    assert new in line and note in line
    assert (agent.data_dir / "spool.incarnation").read_text().strip() == new

    # Its reports carry the new incarnation: the controller stores them (sequences restarted at 1).
    def stored_new() -> list[report_pb2.Report]:
        return [r for r in results(ctl, agent_id, "agent") if r.incarnation == new]

    fresh = wait_for("a report of the new incarnation stored", stored_new, timeout=120, every=0.5)
    assert fresh[0].agent.spool_incarnation == new
    assert fresh[0].sequence < first[-1].sequence or fresh[0].sequence == 1  # sequences restarted

    # ... and tickets the recreation, naming both incarnations and what the agent said.
    ticket = wait_for("the recreated-spool ticket", lambda: ticket_of(ctl, agent_id, "spool-recreated"), timeout=30)
    assert "agent spool was recreated" in ticket["title"] and "spool.db was missing" in ticket["title"]
    evidence = ctl.api("GET", f"/tickets/{ticket['id']}")["evidence"]
    assert (evidence["previous_incarnation"], evidence["incarnation"]) == (old, new)


def test_a_damaged_spool_is_moved_aside_and_the_agent_carries_on(stack: tuple[Controller, AgentProc, str, Path]
                                                                 ) -> None:
    ctl, agent, agent_id, _root = stack
    agent.start()
    wait_for("a stored report", lambda: results(ctl, agent_id, "agent"), timeout=60)
    agent.stop()
    spool = agent.data_dir / "spool.db"
    with sqlite3.connect(spool) as db:  # everything into the main file, then break its header
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(spool.read_bytes())
    data[0:16] = b"not a database!\0"
    spool.write_bytes(bytes(data))

    log_start = agent.log.stat().st_size
    agent.start()
    line = wait_for("the agent to connect again", lambda: next(
        (x for x in agent.log.read_text()[log_start:].splitlines() if "connected to controller" in x), None),
        timeout=60)
    [moved] = [p for p in agent.data_dir.glob("spool.db.damaged-*") if not p.name.endswith(("-wal", "-shm"))]
    assert "integrity check" in line and str(moved) in line
    text = agent.log.read_text()[log_start:]
    assert "Traceback" not in text
    assert agent.proc is not None and agent.proc.poll() is None
