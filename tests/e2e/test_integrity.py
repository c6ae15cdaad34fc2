"""Never lose a result, on real processes: a controller serving real mutual-TLS gRPC, with a hand-driven agent
speaking the real protocol with an enrolled agent's own certificate (``harness.AgentStream``). The real agent's
side of the same faults is in ``test_agent_faults.py``.

A recreated spool restarts its sequences at 1: the controller stores them (they are a new incarnation's, not
replays) and tickets the recreation. A report whose sequence no database can hold is refused, kept and
ticketed, and the stream goes on.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from proto.vigil.v1 import agent_service_pb2 as pb
from tests.e2e.harness import AgentProc, AgentStream, Controller, ports_report, read_only_db


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
