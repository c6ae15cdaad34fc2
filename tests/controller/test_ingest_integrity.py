"""Never lose a result: spool incarnations, missing sequences, refused reports kept, bounds, the overflow ticket.

Each test runs on SQLite and on PostgreSQL (the ``db_url`` fixture).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from controller.baselines import load_baseline
from controller.core import Controller, ControllerConfig
from controller.domain import integrity
from controller.domain.ingest import MAX_QUARANTINE_BYTES, MAX_STATUS_MESSAGE, ingest_reports
from controller.domain.policy import Applicable, applicable_rules
from controller.domain.users import create_api_key, create_user
from controller.judges.registry import CHECK_SPECS
from controller.rest.app import create_app
from controller.server import build_app
from controller.storage.models import (
    Agent,
    AgentIncarnation,
    AuditEntry,
    QuarantinedReport,
    Result,
    SequenceGap,
    Ticket,
)
from proto.vigil.v1 import agent_pb2, common_pb2, report_pb2
from proto.vigil.v1 import agent_service_pb2 as pb
from tests.controller._db import migrated_sessions
from tests.web.conftest import PASSWORD, login

T0 = dt.datetime(2026, 12, 4, 8, 0, tzinfo=dt.UTC)
AGENT = "agt-0123456789abcdef"
HOST = "web-01"
A, B, C = "a" * 32, "b" * 32, "c" * 32
BASELINE = """baseline: fleet
version: 1
rules:
  - id: AGENT-CONTACT
    check: agent
    severity: high
    expect: {max_silence: 3m, dropped_records: {max: 0}}
    refs: ["TPEx-CPA 3(8)4(2)"]
  - id: PORTS-ALLOWED
    check: ports
    severity: high
    expect: {listening: {allow: ["tcp/22 sshd"]}}
"""
RECREATED = "agent spool was recreated: results spooled before it and not delivered may be lost"


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(url=db_url) as factory:
        with factory.begin() as s:
            s.add(Agent(id=AGENT, hostname=HOST, enrolled_at=T0, cert_serial="1", cert_not_after=T0,
                        tags=["linux"], max_sequence=0, status="online"))
        yield factory


RULES: list[Applicable] = applicable_rules([load_baseline(BASELINE, "fleet.yaml", CHECK_SPECS)], ["linux"])


def ports(seq: int, incarnation: str = "", port: int = 22, **kw: Any) -> report_pb2.Report:
    r = report_pb2.Report(sequence=seq, check_id="ports", check_version=1, incarnation=incarnation,
                          status=common_pb2.CheckStatus(kind=common_pb2.CheckStatus.OK), **kw)  # type: ignore[arg-type]
    if not r.HasField("collected_at"):
        r.collected_at.FromDatetime(T0)
    r.ports.listeners.add(proto="tcp", address="0.0.0.0", port=port, pid=1, process="sshd", owner_known=True)
    return r


def health(seq: int, incarnation: str = A, **facts: Any) -> report_pb2.Report:
    r = report_pb2.Report(sequence=seq, check_id="agent", check_version=1, incarnation=incarnation,
                          status=common_pb2.CheckStatus(kind=common_pb2.CheckStatus.OK))  # type: ignore[arg-type]
    r.collected_at.FromDatetime(T0)
    r.agent.CopyFrom(agent_pb2.AgentResult(version="0.2.0", spool_incarnation=incarnation, **facts))
    return r


def send(sessions: sessionmaker[Session], *reports: report_pb2.Report, incarnation: str = "",
         at: dt.datetime = T0) -> list[pb.Ack]:
    with sessions.begin() as s:
        return ingest_reports(s, AGENT, list(reports), RULES, now=at, incarnation=incarnation)


def hello(sessions: sessionmaker[Session], incarnation: str, note: str = "", at: dt.datetime = T0) -> bool:
    """What the agent channel does with a Hello's incarnation."""
    with sessions.begin() as s:
        agent = s.get(Agent, AGENT)
        assert agent is not None
        return integrity.begin_incarnation(s, agent, incarnation, note, at, RULES, agent.last_seen)


def outcomes(acks: list[pb.Ack]) -> list[str]:
    return [pb.Ack.Outcome.Name(a.outcome) for a in acks]


def ticket(s: Session, subject: str) -> Ticket:
    return s.execute(select(Ticket).where(Ticket.subject == subject)).scalar_one()


def tickets_of(s: Session, subject: str) -> list[Ticket]:
    return list(s.execute(select(Ticket).where(Ticket.subject == subject)).scalars())


def audited(s: Session, action: str) -> list[AuditEntry]:
    return list(s.execute(select(AuditEntry).where(AuditEntry.action == action)).scalars())


# -- incarnations ---------------------------------------------------------------------------------------


def test_the_first_incarnation_of_a_new_agent_is_recorded_silently(sessions: sessionmaker[Session]) -> None:
    assert hello(sessions, A) is True
    assert outcomes(send(sessions, ports(1), ports(2), incarnation=A)) == ["STORED", "STORED"]
    with sessions() as s:
        (row,) = s.execute(select(AgentIncarnation)).scalars()
        assert (row.incarnation, row.first_seen, row.max_sequence, row.reports) == (A, T0, 2, 2)
        assert s.execute(select(Ticket)).scalars().all() == []
        assert audited(s, "agent.spool_recreated") == []
        agent = s.get(Agent, AGENT)
        assert agent is not None and (agent.incarnation, agent.max_sequence) == (A, 2)
    assert hello(sessions, A) is False  # a reconnect of the same spool changes nothing


def test_a_recreated_spool_is_stored_never_refused_as_replays_and_tickets(sessions: sessionmaker[Session]) -> None:
    hello(sessions, A)
    assert outcomes(send(sessions, *(ports(n) for n in range(1, 6)), incarnation=A)) == ["STORED"] * 5
    seen = T0 + dt.timedelta(minutes=10)
    with sessions.begin() as s:
        agent = s.get(Agent, AGENT)
        assert agent is not None
        agent.last_seen = seen
    later = T0 + dt.timedelta(hours=1)
    assert hello(sessions, B, note="the previous spool was deleted", at=later) is True
    # Sequences 1..3 again, in the new incarnation: new results, not replays of A's.
    assert outcomes(send(sessions, *(ports(n) for n in range(1, 4)), incarnation=B, at=later)) == ["STORED"] * 3
    # Replay protection holds inside each incarnation.
    assert outcomes(send(sessions, ports(2), incarnation=B, at=later)) == ["DUPLICATE"]
    assert outcomes(send(sessions, ports(5, incarnation=A), incarnation=B, at=later)) == ["DUPLICATE"]
    with sessions() as s:
        assert s.execute(select(func.count()).select_from(Result)).scalar_one() == 8
        assert dict(s.execute(select(Result.incarnation, func.count()).group_by(Result.incarnation)).all()) == {
            A: 5, B: 3}
        t = ticket(s, integrity.RECREATED_SUBJECT)
        assert (t.status, t.rule_id, t.check_id, t.severity, t.occurrences) == ("open", "AGENT-CONTACT", "agent",
                                                                               "high", 1)
        assert t.title.startswith(f"AGENT-CONTACT on {HOST}: {RECREATED}")
        assert "the previous spool was deleted" in t.title
        assert t.evidence == {"previous_incarnation": A, "previous_max_sequence": 5, "previous_reports": 5,
                              "last_contact": "2026-12-04T08:10:00Z", "incarnation": B,
                              "note": "the previous spool was deleted"}
        (entry,) = audited(s, "agent.spool_recreated")
        assert (entry.actor, entry.object_id, entry.details["incarnation"]) == (f"agent:{AGENT}", AGENT, B)
        rows = {r.incarnation: (r.max_sequence, r.reports, r.note)
                for r in s.execute(select(AgentIncarnation)).scalars()}
        assert rows == {A: (5, 5, ""), B: (3, 3, "the previous spool was deleted")}
        agent = s.get(Agent, AGENT)
        assert agent is not None and (agent.incarnation, agent.max_sequence) == (B, 3)


def test_the_recreated_ticket_is_an_event_that_results_do_not_settle(sessions: sessionmaker[Session]) -> None:
    hello(sessions, A)
    send(sessions, ports(1), incarnation=A)
    hello(sessions, B)
    # The agent's health result passes its rule; the recreation it does not speak of stays ticketed.
    assert outcomes(send(sessions, health(1, B), incarnation=B)) == ["STORED"]
    hello(sessions, C, note="spool.db failed its integrity check")
    with sessions() as s:
        t = ticket(s, integrity.RECREATED_SUBJECT)
        assert (t.status, t.occurrences) == ("open", 2)
        assert t.evidence["previous_incarnation"] == B and t.evidence["note"] == "spool.db failed its integrity check"
        assert len(audited(s, "agent.spool_recreated")) == 2


def test_an_agent_from_before_incarnations_that_gets_one_tickets_with_its_history(
        sessions: sessionmaker[Session]) -> None:
    assert outcomes(send(sessions, ports(1), ports(2))) == ["STORED", "STORED"]  # no incarnation at all
    with sessions() as s:
        assert s.execute(select(AgentIncarnation)).scalars().all() == []  # as before incarnations
    hello(sessions, A)
    with sessions() as s:
        rows = {r.incarnation: (r.max_sequence, r.reports) for r in s.execute(select(AgentIncarnation)).scalars()}
        assert rows == {"": (2, 2), A: (0, 0)}
        t = ticket(s, integrity.RECREATED_SUBJECT)
        assert "spool incarnation (none: before spool incarnations) reached sequence 2" in t.title


def test_a_report_naming_an_incarnation_the_stream_did_not_announce_is_recorded(
        sessions: sessionmaker[Session]) -> None:
    hello(sessions, A)
    send(sessions, ports(1), ports(2), incarnation=A)
    # A stream without Hello.spool_incarnation whose reports name a new one: that one becomes current.
    assert outcomes(send(sessions, ports(1, incarnation=B), ports(2, incarnation=B))) == ["STORED", "STORED"]
    with sessions() as s:
        agent = s.get(Agent, AGENT)
        assert agent is not None and (agent.incarnation, agent.max_sequence) == (B, 2)
        assert ticket(s, integrity.RECREATED_SUBJECT).evidence["previous_incarnation"] == A


# -- gaps -----------------------------------------------------------------------------------------------


def test_a_gap_is_recorded_and_tickets_one_ticket_that_repeats(sessions: sessionmaker[Session]) -> None:
    hello(sessions, A)
    assert outcomes(send(sessions, ports(1), ports(2), ports(6), incarnation=A)) == ["STORED"] * 3
    with sessions() as s:
        (gap,) = s.execute(select(SequenceGap)).scalars()
        assert (gap.incarnation, gap.first, gap.last, gap.filled) == (A, 3, 5, 0)
        t = ticket(s, integrity.GAPS_SUBJECT)
        assert t.title == (f"AGENT-CONTACT on {HOST}: sequences 3-5 of spool incarnation {A} never arrived: "
                           "3 results missing")
    send(sessions, ports(9), incarnation=A)
    with sessions() as s:
        assert [(g.first, g.last) for g in s.execute(select(SequenceGap).order_by(SequenceGap.id)).scalars()] == [
            (3, 5), (7, 8)]
        t = ticket(s, integrity.GAPS_SUBJECT)
        assert (t.status, t.occurrences) == ("open", 2)
        assert t.title.endswith("sequences 7-8 of spool incarnation " + A + " never arrived: 2 results missing")
        assert t.evidence["missing"] == 5
        assert [(g["first"], g["last"]) for g in t.evidence["gaps"]] == [(7, 8), (3, 5)]
        agent = s.get(Agent, AGENT)
        assert agent is not None and agent.max_sequence == 9


def test_a_late_sequence_is_stored_and_fills_its_gap(sessions: sessionmaker[Session]) -> None:
    hello(sessions, A)
    send(sessions, ports(1), ports(5), incarnation=A)
    assert outcomes(send(sessions, ports(3), ports(2), incarnation=A)) == ["STORED", "STORED"]
    assert outcomes(send(sessions, ports(3), incarnation=A)) == ["DUPLICATE"]  # filled once only
    with sessions() as s:
        (gap,) = s.execute(select(SequenceGap)).scalars()
        assert (gap.first, gap.last, gap.filled) == (2, 4, 2)
        assert ticket(s, integrity.GAPS_SUBJECT).occurrences == 1  # arriving late is no new gap
        assert sorted(s.execute(select(Result.sequence)).scalars()) == [1, 2, 3, 5]
        agent = s.get(Agent, AGENT)
        assert agent is not None and agent.max_sequence == 5


def test_a_batch_out_of_order_without_holes_is_no_gap(sessions: sessionmaker[Session]) -> None:
    hello(sessions, A)
    assert outcomes(send(sessions, ports(1), ports(3), ports(2), incarnation=A)) == ["STORED"] * 3
    with sessions() as s:
        assert s.execute(select(SequenceGap)).scalars().all() == []
        assert s.execute(select(Ticket)).scalars().all() == []


def test_a_refused_report_is_no_gap(sessions: sessionmaker[Session]) -> None:
    hello(sessions, A)
    send(sessions, ports(1), ports(2, port=70000), incarnation=A)
    send(sessions, ports(3), incarnation=A)
    with sessions() as s:
        assert s.execute(select(SequenceGap)).scalars().all() == []


# -- refused reports are kept ------------------------------------------------------------------------------


def _without_result(seq: int) -> report_pb2.Report:
    r = ports(seq)
    r.ClearField("ports")
    return r


def _unknown_check(seq: int) -> report_pb2.Report:
    r = ports(seq)
    r.check_id = "telepathy"
    return r


def _version(seq: int) -> report_pb2.Report:
    r = ports(seq)
    r.check_version = 2**32 - 1
    return r


def _too_large(seq: int) -> report_pb2.Report:
    r = ports(seq)
    r.status.message = "x" * (5 * 2**20)
    return r


def _far_future(seq: int) -> report_pb2.Report:
    r = ports(seq)
    r.collected_at.seconds = 253_402_300_800  # 10000-01-01
    return r


REFUSALS: dict[str, tuple[Any, str]] = {
    "malformed": (_without_result, "check 'ports' reported OK without a result"),
    "unknown check": (_unknown_check, "unknown check 'telepathy'"),
    "check version": (_version, "check 'ports' version 4294967295 is not one this controller reads"),
    "invalid facts": (lambda seq: ports(seq, port=70000), "70000"),
    "too large": (_too_large, "bytes, more than the 4194304 bytes a report may carry"),
    "sequence 0": (lambda seq: ports(0), "sequence 0 is out of range (1 to 2^63 - 1)"),
    "sequence 2^63": (lambda seq: ports(2**63), f"sequence {2**63} is out of range"),
    "sequence 2^64-1": (lambda seq: ports(2**64 - 1), f"sequence {2**64 - 1} is out of range"),
    "task id": (lambda seq: ports(seq, task_id="t" * 65), "task_id is longer than 64 characters"),
    "collected_at": (_far_future, "collected_at (253402300800 s, 0 ns) is out of range"),
    "incarnation": (lambda seq: ports(seq, incarnation="i" * 33), "spool incarnation is longer than 32 characters"),
}


@pytest.mark.parametrize("kind", list(REFUSALS))
def test_every_refused_report_is_quarantined_and_ticketed_and_the_rest_stored(
        sessions: sessionmaker[Session], kind: str) -> None:
    hello(sessions, A)
    build, reason = REFUSALS[kind]
    bad = build(2)
    acks = send(sessions, ports(1), bad, ports(3), incarnation=A)
    assert outcomes(acks) == ["STORED", "REJECTED", "STORED"]
    assert acks[1].sequence == bad.sequence and reason in acks[1].message
    whole = bad.SerializeToString()
    with sessions() as s:
        (q,) = s.execute(select(QuarantinedReport)).scalars()
        assert (q.agent_id, q.sequence, q.reason, q.received_at) == (AGENT, str(bad.sequence), acks[1].message, T0)
        assert (q.size, q.sha256) == (len(whole), hashlib.sha256(whole).hexdigest())
        assert q.raw == whole[:MAX_QUARANTINE_BYTES]
        t = ticket(s, integrity.QUARANTINE_SUBJECT)
        check = bad.check_id[:32]
        assert t.title == (f"AGENT-CONTACT on {HOST}: report {bad.sequence} of check {check} refused: "
                           f"{acks[1].message}; kept as quarantined report #{q.id}")[:512]
        assert t.evidence["quarantined_report"] == q.id and t.evidence["sha256"] == q.sha256
        assert sorted(s.execute(select(Result.sequence)).scalars()) == [1, 3]
        # A refused report arrived: no gap is said for it. One that cannot be placed in the incarnation
        # (its sequence out of range, or another incarnation) leaves sequence 2 of it missing.
        placed = bad.sequence == 2 and kind != "incarnation"
        gaps = [(g.first, g.last) for g in s.execute(select(SequenceGap)).scalars()]
        assert gaps == ([] if placed else [(2, 2)])


def test_refusals_repeat_one_ticket_per_agent(sessions: sessionmaker[Session]) -> None:
    hello(sessions, A)
    send(sessions, ports(2**63), ports(1, port=70000), incarnation=A)
    send(sessions, ports(2, task_id="t" * 65), incarnation=A)
    with sessions() as s:
        assert s.execute(select(func.count()).select_from(QuarantinedReport)).scalar_one() == 3
        (t,) = tickets_of(s, integrity.QUARANTINE_SUBJECT)
        assert t.occurrences == 3 and "task_id is longer than 64 characters" in t.title


def test_a_stream_whose_hello_incarnation_is_too_long_has_its_reports_quarantined(
        sessions: sessionmaker[Session]) -> None:
    acks = send(sessions, ports(1), ports(2, incarnation=A), incarnation="x" * 40)
    assert outcomes(acks) == ["REJECTED", "STORED"]
    assert acks[0].message == "Hello.spool incarnation is longer than 32 characters (40)"
    with sessions() as s:
        (q,) = s.execute(select(QuarantinedReport)).scalars()
        assert q.incarnation == "x" * 32 and q.sequence == "1"


def test_a_batch_of_nothing_but_refusals_is_kept(sessions: sessionmaker[Session]) -> None:
    assert outcomes(send(sessions, ports(2**64 - 1), ports(0))) == ["REJECTED", "REJECTED"]
    with sessions() as s:
        assert sorted(s.execute(select(QuarantinedReport.sequence)).scalars()) == ["0", str(2**64 - 1)]


# -- bounds ---------------------------------------------------------------------------------------------


def test_a_long_status_message_is_stored_cut_saying_how_long_it_was(sessions: sessionmaker[Session]) -> None:
    r = ports(1)
    r.status.kind = common_pb2.CheckStatus.ERROR
    r.status.message = "é" * 2**20  # 2 MiB of UTF-8: under the report limit, far over the message's
    assert outcomes(send(sessions, r)) == ["STORED"]
    with sessions() as s:
        stored = s.execute(select(Result)).scalar_one()
        kept, marker = stored.status_message.split("… ", 1)
        assert kept == "é" * (MAX_STATUS_MESSAGE // 2)
        assert marker == f"[cut at {MAX_STATUS_MESSAGE} bytes: the message was {2 * 2**20} bytes]"
        assert stored.raw == r.SerializeToString()  # the report as received keeps all of it
        t = s.execute(select(Ticket).where(Ticket.subject == "check-status")).scalar_one()
        assert len(t.title) <= 512 and "cannot judge" in t.title


# -- the spool-overflow ticket --------------------------------------------------------------------------


def test_the_overflow_ticket_states_the_current_count_and_resolves_once_collected_again(
        sessions: sessionmaker[Session]) -> None:
    hello(sessions, A)
    send(sessions, health(1, dropped_records=37, dropped_total=37, pending_recovery=2), incarnation=A)
    with sessions() as s:
        t = ticket(s, "spool")
        assert "dropped 37 result(s)" in t.title and t.evidence["dropped_records"] == 37
    send(sessions, health(2, dropped_records=127, dropped_total=127, pending_recovery=1), incarnation=A)
    with sessions() as s:
        t = ticket(s, "spool")
        assert (t.status, t.occurrences) == ("open", 2)
        assert "dropped 127 result(s)" in t.title and t.evidence["dropped_records"] == 127
        assert t.evidence["pending_recovery"] == 1
        agent = s.get(Agent, AGENT)
        assert agent is not None and agent.dropped_records == 127
    later = T0 + dt.timedelta(minutes=5)
    send(sessions, health(3, dropped_records=127, dropped_total=127, pending_recovery=0), incarnation=A, at=later)
    # The count stays at the episode's once recovered: the ticket stays resolved.
    send(sessions, health(4, dropped_records=127, dropped_total=127, pending_recovery=0), incarnation=A, at=later)
    with sessions() as s:
        t = ticket(s, "spool")
        assert (t.status, t.resolved_at, t.occurrences) == ("resolved", later, 2)
        assert t.resolution == ("automatically resolved: 127 results dropped while the spool was full were "
                                "collected again")


def test_an_overflow_recovered_before_the_controller_heard_of_it_is_ticketed_and_resolved_once(
        sessions: sessionmaker[Session]) -> None:
    hello(sessions, A)
    for seq in (1, 2):  # the same recovered episode, reported twice
        send(sessions, health(seq, dropped_records=50, dropped_total=50, pending_recovery=0), incarnation=A)
    with sessions() as s:
        t = ticket(s, "spool")
        assert (t.status, t.occurrences, t.reopened) == ("resolved", 1, 0)
        assert "dropped 50 result(s)" in t.title and "before the controller heard of it" in t.title
        assert t.resolution == ("automatically resolved: 50 results dropped while the spool was full were "
                                "collected again")
    # A new overflow in the same spool is a new incident: the ticket reopens with its count.
    send(sessions, health(3, dropped_records=10, dropped_total=60, pending_recovery=1), incarnation=A)
    with sessions() as s:
        t = ticket(s, "spool")
        assert (t.status, t.reopened) == ("open", 1) and "dropped 10 result(s) (60 since this spool began)" in t.title


def test_a_bump_keeps_the_title_when_the_message_is_the_same(sessions: sessionmaker[Session]) -> None:
    send(sessions, ports(1, port=6379))
    send(sessions, ports(2, port=6379))
    with sessions() as s:
        (t,) = s.execute(select(Ticket)).scalars()
        assert t.occurrences == 2 and t.title.startswith(f"PORTS-ALLOWED on {HOST}: ")


# -- what the REST API shows -------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path, db_url: str) -> Iterator[tuple[TestClient, str]]:
    """The REST API over the real app and database, with one agent and a viewer's API key."""
    ctl = Controller.open(ControllerConfig(data_dir=tmp_path, db_url=db_url))
    with ctl.sessions.begin() as s:
        create_user(s, "viewer", "viewer", PASSWORD, "test")
        key = create_api_key(s, "viewer", "test")
        s.add(Agent(id="agt-1", hostname=HOST, enrolled_at=T0, cert_serial="1", cert_not_after=T0, tags=["linux"],
                    max_sequence=0))
    with TestClient(create_app(ctl)) as client:
        yield client, key
    ctl.writer.shutdown()
    ctl.sessions.kw["bind"].dispose()


def test_the_agent_shows_its_counts_and_its_quarantine_newest_first(api: tuple[TestClient, str]) -> None:
    client, key = api
    ctl = client.app.state.vigil
    with ctl.sessions.begin() as s:
        agent = s.get(Agent, "agt-1")
        assert agent is not None
        integrity.begin_incarnation(s, agent, A, "", T0, RULES)
        integrity.begin_incarnation(s, agent, B, "spool deleted", T0, RULES)
        acks = ingest_reports(s, "agt-1", [ports(2**64 - 1), ports(1, port=70000), ports(3)], RULES, now=T0,
                              incarnation=B)
    assert outcomes(acks) == ["REJECTED", "REJECTED", "STORED"]
    viewer = {"Authorization": f"Bearer {key}"}
    r = client.get("/api/v1/agents/agt-1", headers=viewer)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["spool_incarnation"], got["incarnations"], got["gaps"], got["quarantined"]) == (B, 2, 1, 2)
    r = client.get("/api/v1/agents/agt-1/quarantine", headers=viewer)
    assert r.status_code == 200, r.text
    listed = r.json()
    assert [q["sequence"] for q in listed] == ["1", str(2**64 - 1)]
    assert all(q["raw"] is None for q in listed) and listed[0]["kept"] == listed[0]["size"]
    r = client.get("/api/v1/agents/agt-1/quarantine?limit=1&raw=true", headers=viewer)
    (one,) = r.json()
    assert base64.b64decode(one["raw"]) == ports(1, port=70000).SerializeToString()
    assert client.get("/api/v1/agents/agt-404/quarantine", headers=viewer).status_code == 404
    assert client.get("/api/v1/agents/agt-1/quarantine?limit=0", headers=viewer).status_code == 422
    r = client.get("/api/v1/agents/agt-1/quarantine?limit=21&raw=true", headers=viewer)
    assert (r.status_code, r.json()["detail"]) == (
        422, "query.limit: at most 20 reports with raw=true (each carries up to 1 MiB), not 21")


def test_the_agent_page_shows_incarnations_gaps_and_quarantined_reports(tmp_path: Path) -> None:
    ctl = Controller.open(ControllerConfig(data_dir=tmp_path))
    try:
        with ctl.sessions.begin() as s:
            create_user(s, "viewer", "viewer", PASSWORD, "test")
            s.add(Agent(id="agt-1", hostname=HOST, enrolled_at=T0, cert_serial="1", cert_not_after=T0,
                        tags=["linux"], max_sequence=0))
            s.flush()
            agent = s.get(Agent, "agt-1")
            assert agent is not None
            integrity.begin_incarnation(s, agent, A, "", T0, RULES)
            ingest_reports(s, "agt-1", [ports(1)], RULES, now=T0, incarnation=A)
            integrity.begin_incarnation(s, agent, B, "spool.db failed its integrity check", T0, RULES)
            ingest_reports(s, "agt-1", [ports(1), ports(4), ports(5, port=70000)], RULES, now=T0, incarnation=B)
        client = TestClient(build_app(ctl), follow_redirects=False)  # type: ignore[arg-type]
        assert login(client, "viewer").status_code == 303
        page = client.get("/agents/agt-1").text
        assert f"<code>{B}</code> <span class=\"badge st-pass\">current</span>" in page
        assert "spool.db failed its integrity check" in page and f"<code>{A}</code>" in page
        assert "<td>2\u20133</td>" in page  # the missing range
        assert "listeners[0].port 70000 is out of range" in page  # why report 5 was refused
        assert "agent spool was recreated" in page  # its open ticket
        assert "GET /api/v1/agents/agt-1/quarantine?raw=true" in page
    finally:
        ctl.writer.shutdown()
        ctl.sessions.kw["bind"].dispose()


def test_a_batch_of_the_current_incarnation_costs_the_same_statements_whatever_its_size(
        sessions: sessionmaker[Session]) -> None:
    hello(sessions, A)
    send(sessions, ports(1), incarnation=A)  # the findings and tickets exist: later batches only confirm them
    engine = sessions.kw["bind"]
    counted: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        counted.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        sizes = {}
        start = 2
        for size in (10, 200):
            counted.clear()
            assert outcomes(send(sessions, *(ports(n) for n in range(start, start + size)), incarnation=A)) == [
                "STORED"] * size
            sizes[size] = len(counted)
            start += size
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert sizes[10] == sizes[200], sizes
    with sessions() as s:
        assert s.execute(select(SequenceGap)).scalars().all() == []
        row = s.get(AgentIncarnation, (AGENT, A))
        assert row is not None and (row.max_sequence, row.reports) == (211, 211)
