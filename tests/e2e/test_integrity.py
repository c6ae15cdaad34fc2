"""Never lose a result, on real processes: a controller serving real mutual-TLS gRPC, with a hand-driven agent
speaking the real protocol with an enrolled agent's own certificate (``harness.AgentStream``), and with the
real agent.

A recreated spool restarts its sequences at 1: the controller stores them (they are a new incarnation's, not
replays) and tickets the recreation. A report whose sequence no database can hold is refused, kept and
ticketed, and the stream goes on. A spool that overflowed while the controller was down tickets with the true
count, and the ticket resolves once the agent has collected everything again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import report_pb2
from tests.e2e.harness import AgentProc, AgentStream, Controller, ports_report, read_only_db, restart, wait_for

BASELINE = """baseline: integrity
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


def stored(ctl: Controller, agent_id: str) -> list[tuple[str, int]]:
    with read_only_db(ctl.data_dir / "controller.db") as db:
        rows = db.execute("SELECT incarnation, sequence FROM results WHERE agent_id = ? ORDER BY id",
                          (agent_id,)).fetchall()
    return [(str(inc), int(seq)) for inc, seq in rows]


def test_a_recreated_spool_is_stored_and_tickets_and_a_bad_sequence_does_not_end_the_stream(
        controller: Controller, tmp_path: Path) -> None:
    agent = AgentProc(tmp_path / "agent")
    agent_id = agent.enroll(controller)
    first, second = uuid.uuid4().hex, uuid.uuid4().hex

    with AgentStream.of(controller.address, agent.data_dir) as stream:
        stream.hello(first)
        for seq in range(1, 6):
            stream.send(ports_report(seq, incarnation=first))
        acks = [stream.next("ack") for _ in range(5)]
        assert [(a.sequence, a.outcome) for a in acks] == [(n, pb.Ack.STORED) for n in range(1, 6)]

    # The agent's spool was deleted: a new incarnation, sequences from 1 again, on a new connection.
    with AgentStream.of(controller.address, agent.data_dir) as stream:
        stream.hello(second, note="the spool was deleted")
        for seq in range(1, 4):
            stream.send(ports_report(seq))  # naming no incarnation: the Hello's
        acks = [stream.next("ack") for _ in range(3)]
        assert [(a.sequence, a.outcome) for a in acks] == [(n, pb.Ack.STORED) for n in range(1, 4)]

        # 2^63 fits no database column: refused and kept, and the next report on the same stream is stored.
        stream.send(ports_report(2**63))
        refused = stream.next("ack")
        assert (refused.sequence, refused.outcome) == (2**63, pb.Ack.REJECTED)
        assert "out of range" in refused.message
        stream.send(ports_report(4))
        ack = stream.next("ack")
        assert (ack.sequence, ack.outcome) == (4, pb.Ack.STORED)

    assert stored(controller, agent_id) == [(first, n) for n in range(1, 6)] + [(second, n) for n in range(1, 5)]
    tickets = [t for t in controller.api("GET", "/tickets") if t["asset"] == agent_id]
    (recreated,) = [t for t in tickets if t["subject"] == "spool-recreated"]
    assert "agent spool was recreated: results spooled before it and not delivered may be lost" in recreated["title"]
    assert "the spool was deleted" in recreated["title"]
    detail = controller.api("GET", f"/tickets/{recreated['id']}")
    assert (detail["evidence"]["previous_incarnation"], detail["evidence"]["previous_max_sequence"],
            detail["evidence"]["incarnation"]) == (first, 5, second)
    (quarantine,) = [t for t in tickets if t["subject"] == "quarantined-reports"]
    assert f"report {2**63} of check ports refused" in quarantine["title"]

    shown = controller.api("GET", f"/agents/{agent_id}")
    assert (shown["spool_incarnation"], shown["incarnations"], shown["gaps"], shown["quarantined"]) == (
        second, 2, 0, 1)
    (kept,) = controller.api("GET", f"/agents/{agent_id}/quarantine")
    assert (kept["sequence"], kept["incarnation"], kept["check_id"]) == (str(2**63), second, "ports")


# -- the real agent ----------------------------------------------------------------------------------------


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
        yield ctl, agent, agent.enroll(ctl), root
    finally:
        agent.stop()
        ctl.stop()


def reports(ctl: Controller, agent_id: str, check_id: str) -> list[report_pb2.Report]:
    with read_only_db(ctl.data_dir / "controller.db") as db:
        rows = db.execute("SELECT raw FROM results WHERE agent_id=? AND check_id=? ORDER BY id",
                          (agent_id, check_id)).fetchall()
    return [report_pb2.Report.FromString(bytes(raw)) for (raw,) in rows]


def ticket_of(ctl: Controller, agent_id: str, subject: str, rule_id: str | None = None) -> dict[str, Any] | None:
    found = [t for t in ctl.api("GET", "/tickets?status=" + ",".join(
        ("open", "acknowledged", "in_progress", "resolved", "closed", "false_positive")))
        if t["asset"] == agent_id and t["subject"] == subject and rule_id in (None, t["rule_id"])]
    return found[0] if found else None


def test_the_real_agent_whose_spool_was_deleted_is_stored_and_ticketed(
        stack: tuple[Controller, AgentProc, str, Path]) -> None:
    ctl, agent, agent_id, _ = stack
    agent.start()
    first = wait_for("a stored report", lambda: reports(ctl, agent_id, "agent"), timeout=60)
    old = first[0].incarnation
    agent.stop()
    for p in agent.data_dir.glob("spool.db*"):
        p.unlink()
    agent.start()
    fresh = wait_for("a report of the new spool stored", lambda: [
        r for r in reports(ctl, agent_id, "agent") if r.incarnation not in ("", old)], timeout=120, every=0.5)
    assert fresh[0].sequence < first[-1].sequence or fresh[0].sequence == 1  # sequences restarted
    ticket = wait_for("the recreated-spool ticket", lambda: ticket_of(ctl, agent_id, "spool-recreated"), timeout=30)
    assert "agent spool was recreated" in ticket["title"] and "spool.db was missing" in ticket["title"]
    evidence = ctl.api("GET", f"/tickets/{ticket['id']}")["evidence"]
    assert (evidence["previous_incarnation"], evidence["incarnation"]) == (old, fresh[0].incarnation)


def test_an_overflow_while_the_controller_was_down_resolves_with_the_true_count(
        stack: tuple[Controller, AgentProc, str, Path], tmp_path: Path) -> None:
    ctl, agent, agent_id, root = stack
    config = tmp_path / "agent.yaml"
    config.write_text("spool_max_mb: 0.046875\n")  # 48 KiB: far fewer results than 300 changes make
    agent.start_with(config)
    wait_for("the fim baseline", lambda: reports(ctl, agent_id, "fim"), timeout=60)
    ctl.stop()
    for i in range(300):
        path = root / "uploads" / f"file-{i:03d}.php"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"<?php echo {i}; // {'padding ' * 20} ?>\n")

    def dropped() -> int:
        with read_only_db(agent.data_dir / "spool.db") as db:
            return int(db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()[0])

    wait_for("the spool to drop results", lambda: dropped() > 0, timeout=60)
    restart(ctl)

    def recovered() -> report_pb2.Report | None:
        healths = [r for r in reports(ctl, agent_id, "agent") if r.agent.dropped_records > 0]
        return next((r for r in reversed(healths) if r.agent.pending_recovery == 0), None)

    count = wait_for("a health result saying the overflow recovered", recovered, timeout=240,
                     every=1.0).agent.dropped_records
    said = f"{count} results dropped while the spool was full were collected again"
    (finding,) = [f for f in ctl.api("GET", f"/agents/{agent_id}")["findings"]
                  if f["subject"] == "spool" and f["rule_id"] == "AGENT-HEALTH"]
    assert (finding["status"], finding["message"]) == ("pass", said)
    assert finding["evidence"]["dropped_records"] == count and finding["evidence"]["pending_recovery"] == 0
    # Ticketed with the count whether the controller heard of the overflow while it lasted or only once the
    # agent had collected everything again (its health results are dropped too while the spool is full).
    failing = [r for r in reports(ctl, agent_id, "agent") if r.agent.dropped_records > 0 and r.agent.pending_recovery]
    ticket = ticket_of(ctl, agent_id, "spool", "AGENT-HEALTH")
    assert ticket is not None
    detail = ctl.api("GET", f"/tickets/{ticket['id']}")
    assert (detail["status"], detail["resolution"]) == ("resolved", f"automatically resolved: {said}")
    told = failing[-1].agent.dropped_records if failing else count
    assert f"dropped {told} result(s)" in detail["title"]
