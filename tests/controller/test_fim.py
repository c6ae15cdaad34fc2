"""File integrity on the controller: judging fim events, expected vs unexpected, tickets and change records."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.baselines import BaselineDoc, BaselineError, Rule, load_baseline
from controller.domain import audit, changes
from controller.domain.ingest import facts_of, ingest_reports
from controller.domain.policy import applicable_rules
from controller.judges import JUDGES, evaluate
from controller.judges.registry import CHECK_SPECS
from controller.storage.models import Agent, Change, ChangeRecord, Finding, Result, Ticket, TicketEvent
from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import common_pb2, fim_pb2, report_pb2
from tests.controller._db import migrated_sessions

T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
AGENT = "agt-0123456789abcdef"
HOST = "web-01"
OLD, NEW = "ab12" + "0" * 60, "cd34" + "1" * 60
DIFF = "--- a/index.php\n+++ b/index.php\n@@ -1 +1 @@\n-<?php echo 'hi';\n+<?php system($_GET['c']);\n"

BASELINE = """baseline: web
version: 1
rules:
  - id: WEBROOT-INTEGRITY
    check: fim
    severity: critical
    params: {paths: [/var/www/html], exclude: ["*.log"]}
    expect: {unexpected_changes: 0}
    refs: ["TPEx-CPA 3(8)4(3)"]
"""


def fim_rule(**expect: Any) -> Rule:
    return Rule("WEBROOT-INTEGRITY", "fim", "critical", 3600, {"paths": ["/var/www/html"]},
                {"unexpected_changes": 0, **expect}, ("TPEx-CPA 3(8)4(3)",))


def fim_event(path: str = "/var/www/html/index.php", kind: str = "MODIFIED", at: dt.datetime | None = None,
              **kw: Any) -> fim_pb2.FimEvent:
    fields: dict[str, Any] = {
        "before": fim_pb2.FimFileState(type="file", sha256=OLD, size=20, mode=0o100644, uid=0, gid=0),
        "after": fim_pb2.FimFileState(type="file", sha256=NEW, size=31, mode=0o100644, uid=0, gid=0),
        "changed_fields": ["sha256", "size", "mtime"],
        "diff": DIFF,
        "detected_by": fim_pb2.FimEvent.REALTIME,
        **kw,
    }
    ev = fim_pb2.FimEvent(kind=getattr(fim_pb2.FimEvent, kind), path=path, **fields)
    if kind == "CREATED":
        ev.ClearField("before")
    if kind == "DELETED":
        ev.ClearField("after")
    ev.detected_at.FromDatetime(at or T0 + dt.timedelta(hours=1, minutes=30))
    return ev


def fim_result(*events: fim_pb2.FimEvent, **kw: Any) -> fim_pb2.FimResult:
    kw.setdefault("scan_kind", "realtime")
    return fim_pb2.FimResult(roots=["/var/www/html"], events=list(events), files_watched=120, **kw)


def facts(*events: fim_pb2.FimEvent, **kw: Any) -> dict[str, Any]:
    """What ingest hands to the evaluator."""
    out: dict[str, Any] = MessageToDict(fim_result(*events, **kw), preserving_proto_field_name=True,
                                        always_print_fields_with_no_presence=True)
    return out


# -- evaluation (pure) ----------------------------------------------------------------------------------


def test_an_unexpected_change_fails_with_the_event_as_evidence() -> None:
    (obs,) = evaluate(fim_rule(), "fim", facts(fim_event()), "OK")
    assert obs.subject == "/var/www/html/index.php"
    assert not obs.passed
    assert obs.message == "unexpected change: /var/www/html/index.php modified (sha256 ab1200000000… → cd3411111111…)"
    assert obs.evidence["diff"] == DIFF
    assert obs.evidence["before"]["sha256"] == OLD and obs.evidence["after"]["sha256"] == NEW
    assert obs.evidence["changed_fields"] == ["sha256", "size", "mtime"]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (fim_event(kind="CREATED", path="/var/www/html/x.php"),
         "unexpected change: /var/www/html/x.php created (sha256 cd3411111111…)"),
        (fim_event(kind="DELETED"), "unexpected change: /var/www/html/index.php deleted (was sha256 ab1200000000…)"),
        (fim_event(kind="RENAMED", path="/var/www/html/a.php", old_path="/var/www/html/a.jpg"),
         "unexpected change: /var/www/html/a.jpg renamed to /var/www/html/a.php (sha256 ab1200000000… → "
         "cd3411111111…)"),
        (fim_event(kind="PERMISSIONS", changed_fields=["mode"],
                   after=fim_pb2.FimFileState(sha256=OLD, mode=0o100666)),
         "unexpected change: /var/www/html/index.php permissions changed (mode 0644 → 0666)"),
        (fim_event(process="vim", package="dpkg:nginx-common"),
         "unexpected change: /var/www/html/index.php modified (sha256 ab1200000000… → cd3411111111…) by process "
         "vim / package dpkg:nginx-common"),
    ],
)
def test_messages_say_what_changed(event: fim_pb2.FimEvent, message: str) -> None:
    (obs,) = evaluate(fim_rule(), "fim", facts(event), "OK")
    assert obs.message == message


def test_an_event_inside_an_approved_change_passes_naming_it() -> None:
    f = facts(fim_event())
    f["events"][0]["expected_change_id"] = "chg-0badc0de"
    (obs,) = evaluate(fim_rule(), "fim", f, "OK", {"chg-0badc0de": "release 4.2"})
    assert obs.passed
    assert obs.message.startswith("expected: inside approved change chg-0badc0de (release 4.2): ")
    assert obs.evidence["expected_source"] == "change chg-0badc0de"


def test_package_manager_changes_are_expected_only_where_the_rule_says_so() -> None:
    f = facts(fim_event(package="dpkg:nginx-common"))
    (strict,) = evaluate(fim_rule(), "fim", f, "OK")
    assert not strict.passed
    (lenient,) = evaluate(fim_rule(package_changes_expected=True), "fim", f, "OK")
    assert lenient.passed
    assert lenient.message.startswith("expected: made by the package manager (dpkg:nginx-common), which "
                                      "WEBROOT-INTEGRITY accepts")


def test_file_cap_fails_and_baseline_scan_judges_nothing() -> None:
    (cap,) = evaluate(fim_rule(), "fim", facts(file_cap_reached=True, file_cap=100, scan_kind="startup",
                                               baseline_created=True), "OK")
    assert (cap.subject, cap.passed) == ("file-cap", False)
    assert cap.message == "120 files watched, cap of 100 reached: files beyond it are not watched"
    assert evaluate(fim_rule(), "fim", facts(baseline_created=True, scan_kind="startup"), "OK") == []
    assert evaluate(fim_rule(), "fim", facts(scan_kind="verify"), "OK") == []


def test_what_a_result_settles_without_observing_it() -> None:
    assert set(JUDGES["fim"].settled(facts(scan_kind="verify"), "OK")) == {"check-status", "file-cap"}
    assert set(JUDGES["fim"].settled(facts(scan_kind="realtime"), "OK")) == {"check-status"}
    assert set(JUDGES["fim"].settled(facts(scan_kind="verify", file_cap_reached=True), "OK")) == {"check-status"}
    assert JUDGES["fim"].settled({}, "ERROR") == {}
    assert JUDGES["ports"].settled({}, "OK") == {}


# -- baselines ----------------------------------------------------------------------------------------


def test_fim_rules_validate_params_and_expect_with_lines() -> None:
    text = BASELINE.replace("params: {paths: [/var/www/html], exclude: [\"*.log\"]}",
                            "params: {paths: [www], max_files: 0, realtime: maybe, coalesce_ms: 5, rehash_days: 0}")
    text = text.replace("expect: {unexpected_changes: 0}", "expect: {unexpected_changes: 3, packages: true}")
    with pytest.raises(BaselineError) as info:
        load_baseline(text, "web.yaml", CHECK_SPECS)
    assert [(p.line, p.field, p.reason) for p in info.value.problems] == [
        (7, "rules[0].params.paths[0]", "'www' is not an absolute path; write e.g. /var/www/html"),
        (7, "rules[0].params.max_files", "must be at least 1"),
        (7, "rules[0].params.rehash_days", "must be more than 0"),
        (7, "rules[0].params.realtime", "must be true or false"),
        (7, "rules[0].params.coalesce_ms", "must be at least 10"),
        (8, "rules[0].expect.unexpected_changes", "must be 0: every unexpected change is a finding and a ticket of "
                                                  "its own"),
        (8, "rules[0].expect.packages", "unknown key; allowed keys: unexpected_changes, package_changes_expected"),
    ]


def test_fim_rule_needs_paths() -> None:
    with pytest.raises(BaselineError, match=r"web.yaml:4: rules\[0\].params.paths: is required"):
        text = BASELINE.replace('    params: {paths: [/var/www/html], exclude: ["*.log"]}\n', "")
        load_baseline(text, "web.yaml", CHECK_SPECS)


def test_a_full_fim_rule_loads() -> None:
    doc = load_baseline(BASELINE.replace(
        'exclude: ["*.log"]',
        'exclude: ["*.log"], nodiff: ["*.key"], max_files: 50000, hash_rate_mb_s: 20, diff_max_kb: 64, '
        'rehash_days: 7, realtime: true, coalesce_ms: 200',
    ).replace("{unexpected_changes: 0}", "{unexpected_changes: 0, package_changes_expected: true}"),
        "web.yaml", CHECK_SPECS)
    assert doc.rules[0].params["max_files"] == 50000
    assert doc.rules[0].expect["package_changes_expected"] is True


# -- ingest: one transaction stores, annotates, judges and records -------------------------------------


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(url=db_url) as factory:
        with factory.begin() as s:
            s.add(Agent(id=AGENT, hostname=HOST, enrolled_at=T0, cert_serial="1", cert_not_after=T0,
                        tags=["linux", "web"], max_sequence=0))
        yield factory


class Fleet:
    def __init__(self, sessions: sessionmaker[Session], baseline: str = BASELINE) -> None:
        self.sessions = sessions
        self.seq = 0
        self.rules = applicable_rules([load_baseline(baseline, "web.yaml", CHECK_SPECS)], ["web"])

    def send(self, result: fim_pb2.FimResult | None, at: dt.datetime,
             kind: int = common_pb2.CheckStatus.OK) -> pb.Ack:
        self.seq += 1
        report = report_pb2.Report(sequence=self.seq, check_id="fim", check_version=1,
                                   status=common_pb2.CheckStatus(kind=kind))  # type: ignore[arg-type]
        report.collected_at.FromDatetime(at)
        if result is not None:
            report.fim.CopyFrom(result)
        with self.sessions.begin() as s:
            (ack,) = ingest_reports(s, AGENT, [report], self.rules, now=at)
        return ack

    def tickets(self) -> list[Ticket]:
        with self.sessions() as s:
            return list(s.execute(select(Ticket).order_by(Ticket.id)).scalars())

    def records(self) -> list[ChangeRecord]:
        with self.sessions() as s:
            return list(s.execute(select(ChangeRecord).order_by(ChangeRecord.id)).scalars())


def approve_change(sessions: sessionmaker[Session], paths: list[str], reason: str = "release 4.2") -> str:
    with sessions.begin() as s:
        c = changes.create(s, "alice", [HOST], paths, "2026-03-02T09:00:00Z", "2026-03-02T10:00:00Z", reason, now=T0)
        changes.approve(s, c.id, "bob", now=T0)
        return c.id


AT = T0 + dt.timedelta(hours=1, minutes=30)


def test_an_unexpected_change_opens_one_ticket_at_once_with_the_diff(sessions: sessionmaker[Session]) -> None:
    fleet = Fleet(sessions)
    assert fleet.send(fim_result(fim_event()), AT).outcome == pb.Ack.STORED
    (t,) = fleet.tickets()
    assert (t.status, t.severity, t.check_id, t.rule_id, t.subject) == (
        "open", "critical", "fim", "WEBROOT-INTEGRITY", "/var/www/html/index.php")
    assert t.title.startswith("WEBROOT-INTEGRITY on web-01: unexpected change: /var/www/html/index.php modified")
    assert t.evidence["diff"] == DIFF
    assert t.initial_report_due == AT + dt.timedelta(minutes=30)
    assert t.refs == ["TPEx-CPA 3(8)4(3)"]
    assert fleet.records() == []

    # The same path again: the same ticket, one more occurrence.
    later = AT + dt.timedelta(minutes=5)
    fleet.send(fim_result(fim_event(at=later)), later)
    (t,) = fleet.tickets()
    assert (t.occurrences, t.last_seen) == (2, later)


def test_a_clean_scan_does_not_resolve_an_unexpected_change(sessions: sessionmaker[Session]) -> None:
    fleet = Fleet(sessions)
    fleet.send(fim_result(fim_event()), AT)
    fleet.send(fim_result(scan_kind="verify"), AT + dt.timedelta(hours=1))
    fleet.send(fim_result(scan_kind="rehash"), AT + dt.timedelta(hours=2))
    (t,) = fleet.tickets()
    assert t.status == "open" and t.resolved_at is None


def test_an_expected_change_is_recorded_and_linked_without_a_ticket(sessions: sessionmaker[Session]) -> None:
    cid = approve_change(sessions, ["/var/www/html/**"])
    fleet = Fleet(sessions)
    fleet.send(fim_result(fim_event(), fim_event("/var/www/html/new.js", "CREATED")), AT)
    assert fleet.tickets() == []
    recs = fleet.records()
    assert [(r.change_id, r.path, r.kind, r.rule_id, r.asset) for r in recs] == [
        (cid, "/var/www/html/index.php", "MODIFIED", "WEBROOT-INTEGRITY", AGENT),
        (cid, "/var/www/html/new.js", "CREATED", "WEBROOT-INTEGRITY", AGENT),
    ]
    assert (recs[0].sha256_before, recs[0].sha256_after, recs[0].at) == (OLD, NEW, AT)
    assert recs[1].sha256_before == "" and recs[0].evidence["diff"] == DIFF
    assert recs[0].expected_source == f"change {cid}"
    with sessions() as s:
        # The stored facts carry the link the controller filled in.
        (result,) = s.execute(select(Result)).scalars()
        assert [e["expected_change_id"] for e in result.facts["events"]] == [cid, cid]
        assert recs[0].result_id == result.id
        f = s.execute(select(Finding).where(Finding.subject == "/var/www/html/index.php")).scalar_one()
        assert f.status == "pass"
        assert f.message.startswith(f"expected: inside approved change {cid} (release 4.2): ")
        change = s.get(Change, cid)
        assert change is not None
        shown = changes.change_json(change, s, 10)
        assert shown["record_count"] == 2 and shown["records"][0]["path"] == "/var/www/html/index.php"


def test_expected_and_unexpected_in_one_report(sessions: sessionmaker[Session]) -> None:
    approve_change(sessions, ["/var/www/html/*.js"])
    fleet = Fleet(sessions)
    fleet.send(fim_result(fim_event("/var/www/html/app.js"), fim_event("/var/www/html/index.php")), AT)
    assert [t.subject for t in fleet.tickets()] == ["/var/www/html/index.php"]
    assert [r.path for r in fleet.records()] == ["/var/www/html/app.js"]


def test_an_expected_change_does_not_resolve_an_earlier_unexpected_one(sessions: sessionmaker[Session]) -> None:
    fleet = Fleet(sessions)
    fleet.send(fim_result(fim_event(at=T0 + dt.timedelta(minutes=10))), T0 + dt.timedelta(minutes=10))
    approve_change(sessions, ["/var/www/html/**"])
    fleet.send(fim_result(fim_event()), AT)
    (t,) = fleet.tickets()
    assert (t.status, t.occurrences) == ("open", 1)
    assert len(fleet.records()) == 1


def test_a_handled_ticket_reopens_on_the_next_unexpected_change(sessions: sessionmaker[Session]) -> None:
    fleet = Fleet(sessions)
    fleet.send(fim_result(fim_event()), AT)
    with sessions.begin() as s:
        (t,) = s.execute(select(Ticket)).scalars()
        t.status = "resolved"
    later = AT + dt.timedelta(hours=1)
    fleet.send(fim_result(fim_event(at=later)), later)
    (t,) = fleet.tickets()
    assert (t.status, t.occurrences) == ("open", 2)
    with sessions() as s:
        kinds = [e.kind for e in s.execute(select(TicketEvent).order_by(TicketEvent.id)).scalars()]
        assert kinds == ["opened", "reopened"]


def test_package_changes_follow_the_rule(sessions: sessionmaker[Session]) -> None:
    lenient = BASELINE.replace("{unexpected_changes: 0}", "{unexpected_changes: 0, package_changes_expected: true}")
    fleet = Fleet(sessions, lenient)
    fleet.send(fim_result(fim_event("/var/www/html/index.html", package="dpkg:nginx-common")), AT)
    assert fleet.tickets() == []
    (rec,) = fleet.records()
    assert (rec.change_id, rec.expected_source) == (None, "package manager (dpkg:nginx-common)")

    strict = Fleet(sessions)
    strict.seq = fleet.seq
    strict.send(fim_result(fim_event("/var/www/html/other.html", package="dpkg:nginx-common")), AT)
    (t,) = strict.tickets()
    assert "package dpkg:nginx-common" in t.title


def test_file_cap_tickets_and_a_full_scan_below_it_resolves(sessions: sessionmaker[Session]) -> None:
    fleet = Fleet(sessions)
    fleet.send(fim_result(scan_kind="startup", baseline_created=True, file_cap_reached=True, file_cap=100), AT)
    (t,) = fleet.tickets()
    assert (t.subject, t.status) == ("file-cap", "open")
    assert "cap of 100 reached" in t.title
    fleet.send(fim_result(scan_kind="realtime"), AT + dt.timedelta(minutes=1))
    assert fleet.tickets()[0].status == "open"  # a real-time report does not count files
    fleet.send(fim_result(scan_kind="verify"), AT + dt.timedelta(hours=1))
    (t,) = fleet.tickets()
    assert t.status == "resolved"
    assert t.resolution == "automatically resolved: a verify scan watched 120 files, below the file cap"


def test_a_broken_check_tickets_and_the_next_good_run_resolves(sessions: sessionmaker[Session]) -> None:
    fleet = Fleet(sessions)
    fleet.send(None, AT, kind=common_pb2.CheckStatus.ERROR)
    (t,) = fleet.tickets()
    assert (t.subject, t.status) == ("check-status", "open")
    fleet.send(fim_result(scan_kind="realtime"), AT + dt.timedelta(minutes=1))
    assert fleet.tickets()[0].status == "resolved"


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (fim_pb2.FimEvent(kind=fim_pb2.FimEvent.MODIFIED, path="relative/x"), "is not an absolute path"),
        (fim_pb2.FimEvent(path="/var/www/x"), "kind 'KIND_UNSPECIFIED' is not one of"),
        (fim_pb2.FimEvent(kind=fim_pb2.FimEvent.RENAMED, path="/var/www/x"), "rename without an absolute old_path"),
    ],
)
def test_malformed_fim_reports_are_rejected(sessions: sessionmaker[Session], event: fim_pb2.FimEvent,
                                            reason: str) -> None:
    ack = Fleet(sessions).send(fim_result(event), AT)
    assert ack.outcome == pb.Ack.REJECTED and reason in ack.message


def test_facts_of_clears_an_agent_supplied_change_id() -> None:
    ok = common_pb2.CheckStatus(kind=common_pb2.CheckStatus.OK)
    report = report_pb2.Report(sequence=1, check_id="fim", status=ok)
    report.fim.CopyFrom(fim_result(fim_event(expected_change_id="chg-forged")))
    assert facts_of(report)["events"][0]["expected_change_id"] == ""


def test_audit_chain_covers_changes_and_tickets(sessions: sessionmaker[Session]) -> None:
    approve_change(sessions, ["/var/www/html/*.js"])
    fleet = Fleet(sessions)
    fleet.send(fim_result(fim_event("/var/www/html/app.js"), fim_event()), AT)
    with sessions() as s:
        result = audit.verify(s)
        assert result.ok and result.entries == 3  # change.request, change.approve, ticket.open


def test_rules_of_a_baseline_doc_are_judged_per_task(sessions: sessionmaker[Session]) -> None:
    # Two fim rules with other paths: each judges only the reports of its own task.
    doc = BaselineDoc("web", 1, None, (fim_rule(), Rule("ETC", "fim", "high", 3600, {"paths": ["/etc"]},
                                                         {"unexpected_changes": 0})))
    rules = applicable_rules([doc], [])
    fleet = Fleet(sessions)
    fleet.rules = rules
    fleet.seq += 1
    report = report_pb2.Report(sequence=fleet.seq, check_id="fim", task_id=rules[1].task_id,
                               status=common_pb2.CheckStatus(kind=common_pb2.CheckStatus.OK))
    report.fim.CopyFrom(fim_result(fim_event("/etc/passwd")))
    with sessions.begin() as s:
        ingest_reports(s, AGENT, [report], rules, now=AT)
    assert [(t.rule_id, t.subject) for t in fleet.tickets()] == [("ETC", "/etc/passwd")]


def test_very_long_paths_get_bounded_distinct_subjects(sessions: sessionmaker[Session]) -> None:
    deep = "/var/www/html/" + "d" * 200 + "/" + "e" * 200
    a, b = deep + "/a.php", deep + "/b.php"
    fleet = Fleet(sessions)
    fleet.send(fim_result(fim_event(a), fim_event(b)), AT)
    subjects = [t.subject for t in fleet.tickets()]
    assert len(subjects) == 2 and len(set(subjects)) == 2 and all(len(s) <= 400 for s in subjects)
    assert fleet.tickets()[0].evidence["path"] == a


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ("{paths: [/]}", "'/' is a filesystem root; name the directories to watch"),
        ("{paths: ['C:\\\\']}", "is a filesystem root"),
        ("{paths: [/var/www], coalesce_ms: 60000}", "must be at most 10000"),
        ("{paths: [/var/www], exclude: [\"\"]}", "must not be empty"),
        ("{paths: [/var/www], max_files: '10'}", "must be a whole number"),
    ],
)
def test_more_fim_param_problems(params: str, reason: str) -> None:
    text = BASELINE.replace('{paths: [/var/www/html], exclude: ["*.log"]}', params)
    with pytest.raises(BaselineError) as info:
        load_baseline(text, "web.yaml", CHECK_SPECS)
    (problem,) = info.value.problems
    assert problem.line == 7 and reason in problem.reason


def test_windows_paths_are_absolute_too() -> None:
    load_baseline(BASELINE.replace("[/var/www/html]", "['C:\\\\inetpub\\\\wwwroot']"), "web.yaml", CHECK_SPECS)
