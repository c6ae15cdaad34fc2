"""Three verdicts through ingest: pass, fail and unknown ("cannot judge"), and tickets keyed by baseline.

Each test stores real reports through ``ingest_reports`` in a migrated database and reads back the
findings and tickets, as the controller does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from controller.baselines import BaselineError, load_baseline
from controller.domain import liveness
from controller.domain.ingest import ingest_reports
from controller.domain.policy import Applicable, applicable_rules
from controller.judges.registry import CHECK_SPECS
from controller.storage.models import Agent, Finding, Ticket, TicketEvent
from controller.storage.store import alembic_config, make_engine, session_factory, upgrade
from controller.web import stats
from proto.vigil.v1 import av_pb2, common_pb2, report_pb2
from tests.controller._db import migrated_sessions

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
AGENT = "agt-0123456789abcdef"


def av_baseline(name: str, max_hours: int, extra: str = "") -> str:
    return f"""baseline: {name}
version: 1
rules:
  - id: AV-AGE
    check: av
    severity: high
    interval: 1h
    expect: {{signature_age_hours: {{max: {max_hours}}}}}
{extra}"""


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(url=db_url) as factory:
        with factory.begin() as s:
            s.add(Agent(id=AGENT, hostname="web-01", enrolled_at=T0, cert_serial="1", cert_not_after=T0,
                        tags=["linux"], max_sequence=0, status="online",
                        checks=[{"check_id": c, "version": 1} for c in ("av", "ntp", "agent")]))
        yield factory


class Host:
    def __init__(self, sessions: sessionmaker[Session], *baselines: str) -> None:
        self.sessions = sessions
        self.seq = 0
        self.docs = [load_baseline(b, f"b{i}.yaml", CHECK_SPECS) for i, b in enumerate(baselines)]
        self.rules: list[Applicable] = applicable_rules(self.docs, ["linux"])

    def av(self, age_hours: float | None, at: dt.datetime, kind: int = common_pb2.CheckStatus.OK,
           message: str = "") -> None:
        self.seq += 1
        report = report_pb2.Report(sequence=self.seq, check_id="av", check_version=1, task_id=self.rules[0].task_id,
                                   status=common_pb2.CheckStatus(kind=kind, message=message))  # type: ignore[arg-type]
        report.collected_at.FromDatetime(at)
        if age_hours is not None:
            report.av.CopyFrom(av_pb2.AvResult(products=[av_pb2.AvProduct(
                name="clamav", signature_age_hours=age_hours, engine_running=True,
                databases=[av_pb2.AvDatabase(name="daily")])]))
        with self.sessions.begin() as s:
            (ack,) = ingest_reports(s, AGENT, [report], self.rules, now=at)
            assert ack.outcome == ack.STORED, ack.message

    def tickets(self) -> list[Ticket]:
        with self.sessions() as s:
            return list(s.execute(select(Ticket).order_by(Ticket.id)).scalars())

    def findings(self) -> dict[tuple[str, str], str]:
        with self.sessions() as s:
            return {(f.baseline, f.subject): f.status for f in s.execute(select(Finding)).scalars()}

    def events(self, kind: str) -> int:
        with self.sessions() as s:
            return len(s.execute(select(TicketEvent).where(TicketEvent.kind == kind)).scalars().all())


def test_two_baselines_sharing_a_rule_id_keep_a_ticket_each(sessions: sessionmaker[Session]) -> None:
    # The default baseline allows 48 h, the operator's own 12 h: a 24 h old database passes one and fails
    # the other, round after round. One shared ticket would be resolved and reopened every round.
    host = Host(sessions, av_baseline("tw-securities-linux", 48), av_baseline("ops-strict", 12))
    for i in range(6):
        host.av(24, T0 + dt.timedelta(hours=i))
    (ticket,) = host.tickets()
    assert ticket.baseline == "ops-strict" and ticket.status == "open" and ticket.occurrences == 6
    assert ticket.dedupe_key == f"{AGENT}|ops-strict|AV-AGE|clamav"
    assert host.events("reopened") == 0 and host.events("auto_resolved") == 0
    assert host.findings() == {("tw-securities-linux", "clamav"): "pass", ("ops-strict", "clamav"): "fail"}


def test_a_check_error_is_unknown_at_once_and_tickets_until_the_next_good_result(
        sessions: sessionmaker[Session]) -> None:
    host = Host(sessions, av_baseline("tw-securities-linux", 48))
    host.av(2, T0)
    host.av(None, T0 + dt.timedelta(hours=1), kind=common_pb2.CheckStatus.ERROR, message="sigtool: not found")
    (ticket,) = host.tickets()
    assert ticket.subject == "check-status" and ticket.status == "open" and ticket.severity == "high"
    assert ticket.title == ("AV-AGE on web-01: cannot judge: the av check reported ERROR: sigtool: not found, so "
                            "AV-AGE could not be evaluated")
    assert host.findings()[("tw-securities-linux", "check-status")] == "unknown"
    assert host.findings()[("tw-securities-linux", "clamav")] == "pass", "what the error did not see stays"
    host.av(3, T0 + dt.timedelta(hours=2))
    (ticket,) = host.tickets()
    assert ticket.status == "resolved"
    assert host.findings()[("tw-securities-linux", "check-status")] == "pass"


def test_on_unknown_record_keeps_the_finding_without_a_ticket(sessions: sessionmaker[Session]) -> None:
    host = Host(sessions, av_baseline("quiet", 48).replace("    interval: 1h\n", "    interval: 1h\n"
                                                           "    on_unknown: record\n"))
    host.av(None, T0, kind=common_pb2.CheckStatus.TIMEOUT)
    assert host.tickets() == []
    assert host.findings() == {("quiet", "check-status"): "unknown"}


def test_unknown_is_never_counted_as_passing(sessions: sessionmaker[Session]) -> None:
    host = Host(sessions, av_baseline("tw-securities-linux", 48), av_baseline("ops-strict", 12))
    host.av(24, T0)
    host.av(None, T0 + dt.timedelta(minutes=1), kind=common_pb2.CheckStatus.ERROR)
    with sessions() as s:
        snap = stats.current(s, T0)
    # Findings: two clamav (one pass, one fail) and two unknown check-status.
    assert (snap.findings_total, snap.findings_passing, snap.findings_unknown) == (4, 1, 2)
    assert stats.compliance_pct(snap) == 25.0


def test_a_rule_without_results_within_its_interval_becomes_unknown(sessions: sessionmaker[Session]) -> None:
    host = Host(sessions, av_baseline("tw-securities-linux", 48))
    host.av(2, T0)
    applied = {"tw-securities-linux": T0}

    def round_at(at: dt.datetime) -> dict[str, int]:
        with sessions.begin() as s:
            return liveness.check_liveness(s, host.docs, dt.timedelta(days=1), 86400 * 30, at, applied)

    # Interval 1 h: twice that plus the grace has not passed yet.
    assert round_at(T0 + dt.timedelta(hours=2))["unknown"] == 0
    assert host.tickets() == []
    late = T0 + dt.timedelta(hours=2, minutes=3)
    assert round_at(late)["unknown"] == 1
    assert round_at(late + dt.timedelta(minutes=1))["unknown"] == 0, "marked once, not every round"
    (ticket,) = host.tickets()
    assert ticket.subject == "check-status" and ticket.status == "open"
    assert "cannot judge: no result of the av check for AV-AGE since 2026-12-01T08:00:00+00:00" in ticket.title
    assert host.findings() == {("tw-securities-linux", "clamav"): "unknown",
                               ("tw-securities-linux", "check-status"): "unknown"}
    assert len(host.tickets()) == 1, "stale passes become unknown without a ticket each"
    host.av(2, late + dt.timedelta(minutes=5))
    assert host.findings() == {("tw-securities-linux", "clamav"): "pass",
                               ("tw-securities-linux", "check-status"): "pass"}
    assert host.tickets()[0].status == "resolved"


def test_a_check_the_agent_does_not_run_is_unknown_at_once(sessions: sessionmaker[Session]) -> None:
    baseline = """baseline: ntp-only
version: 1
rules:
  - id: FIM-ETC
    check: fim
    severity: medium
    params: {paths: [/etc]}
    expect: {unexpected_changes: 0}
"""
    host = Host(sessions, baseline)
    with sessions.begin() as s:
        assert liveness.check_liveness(s, host.docs, dt.timedelta(days=1), 86400 * 30, T0,
                                       {"ntp-only": T0})["unknown"] == 1
    (ticket,) = host.tickets()
    assert "does not run the fim check" in ticket.title


def test_migration_0004_rewrites_ticket_keys_so_ingest_finds_them(db_url: str) -> None:
    from alembic import command

    engine = make_engine(db_url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        conn.execute(text(
            "INSERT INTO tickets (dedupe_key, title, severity, status, asset, check_id, rule_id, subject, refs, "
            "baseline, baseline_version, evidence, first_seen, last_seen, occurrences, resolution, reopened) VALUES "
            f"('{AGENT}|AV-AGE|clamav', 't', 'high', 'open', '{AGENT}', 'av', 'AV-AGE', 'clamav', '[]', "
            "'ops-strict', 1, '{}', '2026-12-01 08:00:00', '2026-12-01 08:00:00', 1, '', 0)"))
    upgrade(engine)
    factory = session_factory(engine)
    try:
        with factory.begin() as s:
            s.add(Agent(id=AGENT, hostname="web-01", enrolled_at=T0, cert_serial="1", cert_not_after=T0,
                        tags=["linux"], max_sequence=0))
        host = Host(factory, av_baseline("ops-strict", 12))
        host.av(24, T0 + dt.timedelta(hours=1))
        (ticket,) = host.tickets()
        assert ticket.dedupe_key == f"{AGENT}|ops-strict|AV-AGE|clamav"
        assert ticket.occurrences == 2, "the migrated ticket was found again, not a second one opened"
    finally:
        engine.dispose()


def test_on_unknown_takes_ticket_or_record_only() -> None:
    with pytest.raises(BaselineError) as refused:
        load_baseline(av_baseline("b", 48).replace("    interval: 1h\n", "    interval: 1h\n    on_unknown: ignore\n"),
                      "b.yaml", CHECK_SPECS)
    assert str(refused.value).endswith("b.yaml:8: rules[0].on_unknown: must be one of ticket, record")


def test_the_longest_ticket_key_fits_on_every_database(sessions: sessionmaker[Session]) -> None:
    from controller.domain.tickets import RuleRef, apply_outcomes
    from controller.judges.base import Observation

    # Asset id 64, baseline 128, rule id 128 and subject 512 characters: every column at its limit.
    asset = "agt-" + "a" * 60
    with sessions.begin() as s:
        s.add(Agent(id=asset, hostname="h", enrolled_at=T0, cert_serial="2", cert_not_after=T0, tags=[],
                    max_sequence=0))
    rule = RuleRef("R" * 128, "ports", "low", (), "b" * 128, 1)
    with sessions.begin() as s:
        (opened,) = apply_outcomes(s, asset, "h", rule, [Observation("s" * 512, "fail", "bad", {})], T0, None)
    with sessions() as s:
        (stored,) = s.execute(select(Ticket).where(Ticket.asset == asset)).scalars()
        assert stored.id == opened.id and len(stored.dedupe_key) == 64 + 128 + 128 + 512 + 3


def test_when_each_task_last_reported_is_kept_for_the_policy_only(sessions: sessionmaker[Session]) -> None:
    host = Host(sessions, av_baseline("tw-securities-linux", 48))
    with sessions.begin() as s:
        agent = s.get(Agent, AGENT)
        assert agent is not None
        agent.last_results = {"0123456789abcdef": "2026-01-01T00:00:00+00:00"}  # a task no baseline asks for now
    host.av(2, T0)
    with sessions() as s:
        agent = s.get(Agent, AGENT)
        assert agent is not None
        assert agent.last_results == {host.rules[0].task_id: T0.isoformat()}
