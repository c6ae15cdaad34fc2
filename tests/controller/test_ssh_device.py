"""Devices a sensor collects from, through ingest on SQLite and PostgreSQL: each device is an asset of its
own (findings and tickets under ``dev:<name>``, none under the sensor), states resolve themselves, a
configuration change stays open until people handle it, an unreachable device is never passed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.json_format import ParseDict
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.baselines import load_baseline
from controller.domain.ingest import ingest_reports
from controller.domain.policy import Applicable, applicable_rules
from controller.judges.registry import CHECK_SPECS
from controller.storage.models import Agent, Finding, Ticket
from proto.vigil.v1 import common_pb2, report_pb2, ssh_device_pb2
from tests.controller._db import migrated_sessions

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
SENSOR = "agt-5e5505e5505e5505"
BASELINE = """baseline: tw-network
version: 1
scope: {tags: [sensor]}
rules:
  - id: NET-DEVICES
    check: ssh_device
    severity: high
    interval: 1h
    params:
      ranges: [10.20.0.0/24]
      devices:
        - {name: fw-hq, address: 10.20.0.1, platform: fortinet, credential: fw}
        - {name: core-sw-01, address: 10.20.0.2, platform: cisco_ios, credential: core}
    expect: {supported: true, synchronized: true, max_offset_ms: 500, config_changes: 0}
"""


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(url=db_url) as factory:
        with factory.begin() as s:
            s.add(Agent(id=SENSOR, hostname="sensor-01", enrolled_at=T0, cert_serial="1", cert_not_after=T0,
                        tags=["sensor"], max_sequence=0, status="online",
                        checks=[{"check_id": "ssh_device", "version": 1}]))
        yield factory


class Sensor:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.seq = 0
        self.rules: list[Applicable] = applicable_rules([load_baseline(BASELINE, "b.yaml", CHECK_SPECS)], ["sensor"])

    def report(self, at: dt.datetime, *devices: dict[str, Any]) -> None:
        reports = []
        for facts in [*devices, {}]:  # each device, then the run's own report
            self.seq += 1
            r = report_pb2.Report(sequence=self.seq, check_id="ssh_device", check_version=1,
                                  task_id=self.rules[0].task_id, status=common_pb2.CheckStatus(kind="OK"))
            r.collected_at.FromDatetime(at)
            r.ssh_device.CopyFrom(ParseDict(facts, ssh_device_pb2.SshDeviceResult()))
            reports.append(r)
        with self.sessions.begin() as s:
            acks = ingest_reports(s, SENSOR, reports, self.rules, now=at)
        assert all(a.outcome == a.STORED for a in acks), [a.message for a in acks]

    def open_tickets(self) -> dict[tuple[str, str], str]:
        with self.sessions() as s:
            return {(t.asset, t.subject): t.title for t in s.execute(select(Ticket)).scalars()
                    if t.status not in ("resolved", "closed")}

    def findings(self) -> dict[tuple[str, str], str]:
        with self.sessions() as s:
            return {(f.asset, f.subject): f.status for f in s.execute(select(Finding)).scalars()}


def _t(at: dt.datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def fw(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"device": "fw-hq", "address": "10.20.0.1", "port": 22, "platform": "fortinet",
                            "reached": True, "version": "v5.6.3,build1547 (GA)",
                            "ntp": {"synchronized": False}, "config": {"digest": "a" * 64, "first": True}}
    return {**base, **over}


def sw(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"device": "core-sw-01", "address": "10.20.0.2", "port": 22, "platform": "cisco_ios",
                            "reached": True, "version": "15.9(3)M4",
                            "ntp": {"synchronized": True, "offset_ms": 0.4, "stratum": 3},
                            "config": {"digest": "c" * 64, "first": True}}
    return {**base, **over}


def test_each_device_is_its_own_asset_and_judged_like_a_host(sessions: sessionmaker[Session]) -> None:
    sensor = Sensor(sessions)
    sensor.report(T0, fw(), sw())
    tickets = sensor.open_tickets()
    assert set(tickets) == {("dev:fw-hq", "eol"), ("dev:fw-hq", "ntp")}
    assert "NET-DEVICES on dev:fw-hq: fw-hq runs v5.6.3,build1547 (GA) (fortios before 6.0)" in tickets[
        ("dev:fw-hq", "eol")], tickets
    assert "fw-hq: clock synchronized is false" in tickets[("dev:fw-hq", "ntp")]
    found = sensor.findings()
    assert not [k for k in found if k[0] == SENSOR]  # nothing is filed under the sensor
    assert found[("dev:core-sw-01", "ntp")] == "pass" and found[("dev:core-sw-01", "reachable")] == "pass"

    # The clock is synchronised later: its ticket resolves by itself; the EOL one stays.
    sensor.report(T0 + dt.timedelta(hours=1), fw(ntp={"synchronized": True, "offset_ms": 2.0}), sw())
    assert set(sensor.open_tickets()) == {("dev:fw-hq", "eol")}


def test_a_config_change_stays_open_after_an_unchanged_run(sessions: sessionmaker[Session]) -> None:
    sensor = Sensor(sessions)
    sensor.report(T0, sw())
    change = {"digest": "d" * 64, "previous_digest": "c" * 64, "changed": True,
              "diff": "--- previous\n+++ now\n-ip access-list 10 permit 10.0.0.0\n+ip access-list 10 permit any\n"}
    sensor.report(T0 + dt.timedelta(hours=1), sw(config=change))
    assert ("dev:core-sw-01", "config") in sensor.open_tickets()
    with sessions() as s:
        (ticket,) = s.execute(select(Ticket).where(Ticket.subject == "config")).scalars()
        assert "permit any" in ticket.evidence["diff"]
    sensor.report(T0 + dt.timedelta(hours=2), sw(config={"digest": "d" * 64}))
    assert ("dev:core-sw-01", "config") in sensor.open_tickets()  # an event: people close it


def test_an_unreachable_device_fails_reachable_and_passes_nothing(sessions: sessionmaker[Session]) -> None:
    sensor = Sensor(sessions)
    sensor.report(T0, sw())
    sensor.report(T0 + dt.timedelta(hours=1), {
        "device": "core-sw-01", "address": "10.20.0.2", "port": 22, "platform": "cisco_ios", "reached": False,
        "error_kind": "host_key_changed",
        "error": "core-sw-01 (10.20.0.2): HOST KEY CHANGED: the device shows ssh-ed25519 SHA256:new"})
    tickets = sensor.open_tickets()
    assert "HOST KEY CHANGED" in tickets[("dev:core-sw-01", "reachable")]
    found = sensor.findings()
    assert {found[("dev:core-sw-01", s)] for s in ("eol", "ntp", "config")} == {"unknown"}


def test_a_config_change_inside_an_approved_change_is_a_record_not_a_ticket(sessions: sessionmaker[Session]) -> None:
    from common.errors import UsageError
    from controller.domain import changes
    from controller.storage.models import ChangeRecord

    sensor = Sensor(sessions)
    with sessions.begin() as s, pytest.raises(UsageError, match="'dev:core-sw-01' is no device a sensor has reported"):
        changes.create(s, "alice", ["dev:core-sw-01"], ["/running-config"], _t(T0), _t(T0 + dt.timedelta(hours=4)),
                       "CR-221: open the management ACL", now=T0)
    sensor.report(T0, sw())
    with sessions.begin() as s:
        change = changes.create(s, "alice", ["dev:core-sw-01"], ["/running-config"],
                                _t(T0 + dt.timedelta(minutes=30)), _t(T0 + dt.timedelta(hours=4)),
                                "CR-221: open the management ACL", now=T0)
        changes.approve(s, change.id, "bob", now=T0 + dt.timedelta(minutes=5))
        cid = change.id
    at = T0 + dt.timedelta(hours=1)
    inside = {"digest": "d" * 64, "previous_digest": "c" * 64, "changed": True, "diff": "-a\n+b\n",
              "detected_at": _t(at)}
    sensor.report(at, sw(config=inside))
    assert ("dev:core-sw-01", "config") not in sensor.open_tickets()
    assert sensor.findings()[("dev:core-sw-01", "config")] == "pass"
    with sessions() as s:
        (record,) = s.execute(select(ChangeRecord)).scalars()
        assert (record.change_id, record.asset, record.path) == (cid, "dev:core-sw-01", "/running-config")
    # After the window, the same kind of change is a ticket again.
    late = T0 + dt.timedelta(hours=5)
    outside = {**inside, "digest": "e" * 64, "previous_digest": "d" * 64,
               "detected_at": _t(late)}
    sensor.report(late, sw(config=outside))
    assert ("dev:core-sw-01", "config") in sensor.open_tickets()


def test_the_inventory_lists_declared_devices_with_what_they_last_reported(sessions: sessionmaker[Session]) -> None:
    from controller.domain import devices

    docs = [load_baseline(BASELINE.replace("credential: core}", "credential: core, purpose: '=HYPERLINK(1)'}"),
                          "b.yaml", CHECK_SPECS)]
    with sessions() as s:
        before = devices.inventory(s, docs)
    assert [(d["name"], d["support"], d["last_collected"]) for d in before] == [
        ("core-sw-01", "not collected yet", None), ("fw-hq", "not collected yet", None)]
    Sensor(sessions).report(T0, fw(), sw())
    with sessions() as s:
        rows = {d["name"]: d for d in devices.inventory(s, docs)}
    fw_hq = rows["fw-hq"]
    assert (fw_hq["support"], fw_hq["reached"], fw_hq["sensor"], fw_hq["open_tickets"]) == (
        "end of life", True, "sensor-01", 2)
    assert fw_hq["last_collected"] == "2026-12-01T08:00:00Z" and fw_hq["ports_used"] == ["tcp/22"]
    assert rows["core-sw-01"]["support"] == "supported" and rows["core-sw-01"]["version"] == "15.9(3)M4"
    text = devices.csv_text(list(rows.values()))
    header, *lines = text.split("\r\n")
    assert header.split(",") == list(devices.CSV_COLUMNS) and len([x for x in lines if x]) == 2
    assert "'=HYPERLINK(1)" in text  # a formula is never handed to a spreadsheet as one


NETSCAN = """baseline: tw-network-ports
version: 1
scope: {tags: [sensor]}
rules:
  - id: NET-PORTS
    check: netscan
    severity: high
    interval: 6h
    params: {ranges: [10.20.0.0/24], targets: [{name: fw-hq, address: 10.20.0.1}]}
    expect: {allowed: [tcp/443]}
"""


def test_reachable_ports_are_filed_under_the_device_and_resolve_when_closed(sessions: sessionmaker[Session]) -> None:
    from proto.vigil.v1 import netscan_pb2

    rules = applicable_rules([load_baseline(NETSCAN, "n.yaml", CHECK_SPECS)], ["sensor"])

    def scan(seq: int, at: dt.datetime, *open_ports: int) -> None:
        reports = []
        for i, facts in enumerate([{"target": "fw-hq", "address": "10.20.0.1", "method": "connect", "scanned": 1024,
                                    "open": [{"port": p} for p in open_ports]}, {}]):
            r = report_pb2.Report(sequence=seq + i, check_id="netscan", check_version=1, task_id=rules[0].task_id,
                                  status=common_pb2.CheckStatus(kind="OK"))
            r.collected_at.FromDatetime(at)
            r.netscan.CopyFrom(ParseDict(facts, netscan_pb2.NetscanResult()))
            reports.append(r)
        with sessions.begin() as s:
            assert all(a.outcome == a.STORED for a in ingest_reports(s, SENSOR, reports, rules, now=at))

    def open_tickets() -> set[tuple[str, str]]:
        with sessions() as s:
            return {(t.asset, t.subject) for t in s.execute(select(Ticket)).scalars()
                    if t.status not in ("resolved", "closed")}

    scan(1, T0, 23, 443)
    assert open_tickets() == {("dev:fw-hq", "tcp/23")}
    scan(3, T0 + dt.timedelta(hours=6), 443)
    assert open_tickets() == set()


def test_a_linux_target_is_judged_by_its_os_release_like_a_host(sessions: sessionmaker[Session]) -> None:
    linux = BASELINE.replace("- {name: core-sw-01, address: 10.20.0.2, platform: cisco_ios, credential: core}",
                             "- {name: db-legacy, address: 10.20.0.2, platform: linux, credential: core}")
    sensor = Sensor(sessions)
    sensor.rules = applicable_rules([load_baseline(linux, "b.yaml", CHECK_SPECS)], ["sensor"])

    def host(release: str) -> dict[str, Any]:
        return {"device": "db-legacy", "address": "10.20.0.2", "port": 22, "platform": "linux", "reached": True,
                "version": release, "ntp": {"synchronized": True, "offset_ms": 1.0},
                "os": {"kind": "os", "name": f"debian {release}", "product": "debian", "version": release,
                       "lifecycle": "os", "source": "ssh:/etc/os-release"}}

    sensor.report(T0, host("9"))
    tickets = sensor.open_tickets()
    assert "db-legacy runs 9 (debian 9): end of life" in tickets[("dev:db-legacy", "eol")]
    sensor.report(T0 + dt.timedelta(hours=1), host("12"))
    assert ("dev:db-legacy", "eol") not in sensor.open_tickets()
    assert sensor.findings()[("dev:db-legacy", "eol")] == "pass"


def test_reachable_ports_are_compared_with_what_the_hosts_own_agent_reports(sessions: sessionmaker[Session]) -> None:
    """The comparison only a sensor can make: reachable from the network vs reported listening."""
    from proto.vigil.v1 import netscan_pb2, ports_pb2

    host_id = "agt-0000000000000web"
    with sessions.begin() as s:
        s.add(Agent(id=host_id, hostname="web-01", enrolled_at=T0, cert_serial="2", cert_not_after=T0, tags=["web"],
                    max_sequence=0, status="online", checks=[{"check_id": "ports", "version": 1}]))
    ports_rules = applicable_rules([load_baseline(
        "baseline: web\nversion: 1\nrules:\n  - {id: PORTS, check: ports, severity: high, interval: 5m,\n"
        "     expect: {listening: {allow: [tcp/22, tcp/127.0.0.1:5432]}}}\n", "w.yaml", CHECK_SPECS)], ["web"])
    r = report_pb2.Report(sequence=1, check_id="ports", check_version=1, task_id=ports_rules[0].task_id,
                          status=common_pb2.CheckStatus(kind="OK"))
    r.collected_at.FromDatetime(T0)
    r.ports.CopyFrom(ports_pb2.PortsResult(listeners=[
        ports_pb2.PortsListener(proto="tcp", address="0.0.0.0", port=22, process="sshd", owner_known=True),
        ports_pb2.PortsListener(proto="tcp", address="127.0.0.1", port=5432, process="postgres", owner_known=True)]))
    with sessions.begin() as s:
        ingest_reports(s, host_id, [r], ports_rules, now=T0)

    baseline = NETSCAN.replace("targets: [{name: fw-hq, address: 10.20.0.1}]",
                               "targets: [{name: web-01, address: 10.20.0.5, agent: web-01}, "
                               "{name: ghost, address: 10.20.0.6, agent: nobody}]")
    baseline = baseline.replace("allowed: [tcp/443]", "allowed: [tcp/22, tcp/5432, tcp/8080]")
    rules = applicable_rules([load_baseline(baseline, "n.yaml", CHECK_SPECS)], ["sensor"])
    reports = []
    for i, facts in enumerate([
            {"target": "web-01", "address": "10.20.0.5", "agent": "web-01", "method": "connect",
             "open": [{"port": 22}, {"port": 5432}, {"port": 8080}]},
            {"target": "ghost", "address": "10.20.0.6", "agent": "nobody", "method": "connect", "open": []}, {}]):
        rep = report_pb2.Report(sequence=10 + i, check_id="netscan", check_version=1, task_id=rules[0].task_id,
                                status=common_pb2.CheckStatus(kind="OK"))
        rep.collected_at.FromDatetime(T0)
        rep.netscan.CopyFrom(ParseDict(facts, netscan_pb2.NetscanResult()))
        reports.append(rep)
    with sessions.begin() as s:
        ingest_reports(s, SENSOR, reports, rules, now=T0 + dt.timedelta(minutes=1))
    with sessions() as s:
        found = {(f.asset, f.subject): (f.status, f.message) for f in s.execute(select(Finding)).scalars()}
        titles = {t.subject: t.title for t in s.execute(select(Ticket).where(Ticket.asset == host_id)).scalars()}
    assert found[(host_id, "exposure/tcp/22")][0] == "pass"
    assert "listening on loopback only (127.0.0.1)" in found[(host_id, "exposure/tcp/5432")][1]
    assert "its agent reports no listener on it" in found[(host_id, "exposure/tcp/8080")][1]
    assert titles["exposure/tcp/8080"].startswith("NET-PORTS on web-01: ")  # filed under the host, by its name
    assert found[("dev:ghost", "agent")][0] == "unknown"


def test_a_result_about_a_device_the_rule_does_not_name_judges_nothing(sessions: sessionmaker[Session]) -> None:
    """A forged (or stale) report must not open, bump or resolve any asset's tickets."""
    sensor = Sensor(sessions)
    sensor.report(T0, fw())
    before = sensor.open_tickets()
    assert ("dev:fw-hq", "eol") in before
    sensor.report(T0 + dt.timedelta(hours=1), fw(address="10.20.0.99", version="7.4.1", ntp={"synchronized": True}),
                  {"device": "intruder", "address": "10.20.0.1", "port": 22, "platform": "fortinet", "reached": False,
                   "error_kind": "timeout"})
    assert sensor.open_tickets() == before
    assert not [k for k in sensor.findings() if k[0] == "dev:intruder"]


def test_the_inventory_adds_what_scans_found_and_lists_scanned_only_targets(sessions: sessionmaker[Session]) -> None:
    from controller.domain import devices
    from proto.vigil.v1 import netscan_pb2

    scan_baseline = NETSCAN.replace(
        "targets: [{name: fw-hq, address: 10.20.0.1}]",
        "targets: [{name: fw-hq, address: 10.20.0.1}, {name: cam-lobby, address: 10.20.0.40}]")
    docs = [load_baseline(BASELINE, "b.yaml", CHECK_SPECS), load_baseline(scan_baseline, "n.yaml", CHECK_SPECS)]
    Sensor(sessions).report(T0, fw(), sw())
    rules = applicable_rules(docs[1:], ["sensor"])
    reports = []
    for i, facts in enumerate([{"target": "fw-hq", "address": "10.20.0.1", "open": [{"port": 443}, {"port": 22}]},
                               {"target": "cam-lobby", "address": "10.20.0.40", "open": [{"port": 554}]}, {}]):
        r = report_pb2.Report(sequence=100 + i, check_id="netscan", check_version=1, task_id=rules[0].task_id,
                              status=common_pb2.CheckStatus(kind="OK"))
        r.collected_at.FromDatetime(T0 + dt.timedelta(minutes=5))
        r.netscan.CopyFrom(ParseDict(facts, netscan_pb2.NetscanResult()))
        reports.append(r)
    with sessions.begin() as s:
        ingest_reports(s, SENSOR, reports, rules, now=T0 + dt.timedelta(minutes=5))
    with sessions() as s:
        rows = {d["name"]: d for d in devices.inventory(s, docs)}
    assert rows["fw-hq"]["ports_used"] == ["tcp/22", "tcp/443"] and rows["fw-hq"]["platform"] == "fortinet"
    cam = rows["cam-lobby"]
    assert (cam["connection"], cam["ports_used"], cam["sensor"]) == ("scanned only", ["tcp/554"], "sensor-01")
    assert cam["last_collected"] == "2026-12-01T08:05:00Z" and cam["support"] == "not collected yet"
    assert "tcp/22 tcp/443" in devices.csv_text(list(rows.values()))
