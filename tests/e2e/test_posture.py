"""Posture checks end to end: real agent and controller processes, real ClamAV databases, real SNTP."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

from tests.checks.av.test_live import build_daily
from tests.e2e.harness import AgentProc, AgentStream, Controller, wait_for

AV_BASELINE = """baseline: tw-securities-linux
version: 10
rules:
  - id: AV-AGE
    check: av
    severity: high
    interval: 10s
    params: {{clamav_dirs: ["{dbdir}"]}}
    expect: {{signature_age_hours: {{max: 24}}}}
    refs: ["TPEx-CPA 3(8)4(2)"]
"""


def av_tickets(ctl: Controller, asset: str) -> list[dict]:
    return [t for t in json.loads(ctl.vigil("tickets", "list", "--json").stdout)
            if t["check"] == "av" and t["asset"] == asset]


def test_three_day_old_clamav_database_tickets_and_a_fresh_one_resolves(controller: Controller, tmp_path: Path) -> None:
    ctl = controller
    dbdir = tmp_path / "old" / "clamav"
    dbdir.parent.mkdir()
    build_daily(dbdir, int(time.time()) - 3 * 86400)
    (tmp_path / "b.yaml").write_text(AV_BASELINE.format(dbdir=dbdir))
    ctl.vigil("baseline", "apply", str(tmp_path / "b.yaml"))
    agent = AgentProc(tmp_path / "agent")
    agent_id = agent.enroll(ctl)
    agent.start()
    try:
        (ticket,) = wait_for("an av ticket", lambda: av_tickets(ctl, agent_id), timeout=60)
        assert ticket["status"] == "open" and ticket["rule_id"] == "AV-AGE" and ticket["subject"] == "clamav"
        age = ticket["evidence"]["facts"]["signature_age_hours"]
        assert 71.5 < age < 73.5
        assert ticket["title"].startswith("AV-AGE on ")
        assert "clamav: signature_age_hours is 7" in ticket["title"] and "more than the maximum 24" in ticket["title"]

        # freshclam replaces the database: the next run passes and the same ticket resolves.
        fresh = tmp_path / "new" / "clamav"
        fresh.parent.mkdir()
        build_daily(fresh, int(time.time()) - 600)
        (dbdir / "daily.cvd").unlink()
        (fresh / "daily.cvd").rename(dbdir / "daily.cvd")
        ctl.vigil("sweep", "run", "--checks", "av")
        resolved = wait_for("the av ticket resolved",
                            lambda: [t for t in av_tickets(ctl, agent_id) if t["status"] == "resolved"], timeout=60)
        assert resolved[0]["id"] == ticket["id"] and len(av_tickets(ctl, agent_id)) == 1
    finally:
        agent.stop()


def test_host_without_antivirus_gets_a_ticket(controller: Controller, tmp_path: Path) -> None:
    """The host's report says no product was found (as Av.collect does on a host with none)."""
    from proto.vigil.v1 import agent_service_pb2 as pb
    from proto.vigil.v1 import av_pb2, common_pb2, report_pb2

    ctl = controller
    (tmp_path / "b.yaml").write_text(AV_BASELINE.format(dbdir=tmp_path / "none"))
    ctl.vigil("baseline", "apply", str(tmp_path / "b.yaml"))
    agent = AgentProc(tmp_path / "agent")
    agent_id = agent.enroll(ctl)
    report = report_pb2.Report(sequence=1, check_id="av", check_version=1, av=av_pb2.AvResult())
    report.collected_at.FromDatetime(dt.datetime.now(dt.UTC))
    report.status.kind = common_pb2.CheckStatus.OK
    with AgentStream.of(ctl.address, agent.data_dir) as stream:
        stream.hello()
        stream.send(pb.AgentMessage(report=report))
        assert stream.next("ack").outcome == pb.Ack.STORED
    (ticket,) = av_tickets(ctl, agent_id)
    assert ticket["subject"] == "av" and ticket["severity"] == "high"
    assert "no antivirus product found" in ticket["title"]


EOL_BASELINE = """baseline: tw-securities-linux
version: 10
rules:
  - id: EOL-SUPPORTED
    check: eol
    severity: medium
    interval: 1h
    params: {{root: "{root}"}}
    expect: {{supported: true, days_to_end_of_support: {{min: 90}}}}
    refs: ["TPEx-CPA 3(8)1(1)", "TWSE-CC CC-17010 a(j)"]
"""


def test_eol_names_cycles_finds_an_expired_third_party_runtime_and_spares_vendor_packages(
    controller: Controller, tmp_path: Path
) -> None:
    from tests.checks.eol.test_collect import debian_root, script

    ctl = controller
    root = debian_root(tmp_path / "host")
    script(root, "usr/local/bin/node", "v16.20.2")  # a tarball Node, past its upstream EOL (2023-09-11)
    (tmp_path / "b.yaml").write_text(EOL_BASELINE.format(root=root))
    ctl.vigil("baseline", "apply", str(tmp_path / "b.yaml"))
    agent = AgentProc(tmp_path / "agent")
    agent_id = agent.enroll(ctl)
    agent.start()
    try:
        findings = wait_for("eol findings", lambda: [
            f for f in json.loads(ctl.vigil("findings", "list", "--check", "eol", "--json").stdout)
            if f["asset"] == agent_id], timeout=60)
        by_subject = {f["subject"]: f for f in findings}
        debian = by_subject["debian 12"]["evidence"]["item"]
        assert debian["cycle"] == "12" and debian["eol_date"] == "2026-06-10"
        assert debian["extended_support_date"] == "2028-06-30" and debian["in_extended_support"] is True
        assert by_subject["debian 12"]["status"] == "pass"  # LTS applies; this baseline accepts it

        openssl = by_subject["openssl 3.0.19 (dpkg:openssl)"]
        assert openssl["status"] == "pass"
        assert openssl["evidence"]["item"]["lifecycle"] == "os"  # vendor-patched: Debian 12's lifecycle
        assert "debian 12" in openssl["evidence"]["item"]["lifecycle_reason"]

        node = by_subject["nodejs 16.20.2 (/usr/local/bin/node)"]
        assert node["status"] == "fail" and node["evidence"]["item"]["lifecycle"] == "upstream"
        assert node["evidence"]["item"]["cycle"] == "16" and node["evidence"]["item"]["eol_date"] == "2023-09-11"

        tickets = [t for t in json.loads(ctl.vigil("tickets", "list", "--json").stdout) if t["check"] == "eol"]
        assert {t["subject"] for t in tickets} >= {"nodejs 16.20.2 (/usr/local/bin/node)"}
        assert "openssl 3.0.19 (dpkg:openssl)" not in {t["subject"] for t in tickets}
    finally:
        agent.stop()


NTP_BASELINE = """baseline: tw-securities-linux
version: 10
rules:
  - id: NTP-CLOCK
    check: ntp
    severity: medium
    interval: 10s
    params: {{servers: ["127.0.0.1:{port}"], samples: 3}}
    expect: {{offset_ms: {{max_abs: 250}}}}
    refs: ["TWSE-CC CC-17020 b(f)"]
"""


def test_clock_five_seconds_off_the_reference_raises_an_ntp_ticket(controller: Controller, tmp_path: Path) -> None:
    from tests.checks.ntp.responder import sntp_responder

    ctl = controller
    # The reference server runs 5 s ahead of this host: seen from the reference, the host is 5 s slow.
    with sntp_responder(offset_s=5.0) as responder:
        (tmp_path / "b.yaml").write_text(NTP_BASELINE.format(port=responder.port))
        ctl.vigil("baseline", "apply", str(tmp_path / "b.yaml"))
        agent = AgentProc(tmp_path / "agent")
        agent_id = agent.enroll(ctl)
        agent.start()
        try:
            (ticket,) = wait_for("an ntp ticket", lambda: [
                t for t in json.loads(ctl.vigil("tickets", "list", "--json").stdout)
                if t["check"] == "ntp" and t["asset"] == agent_id], timeout=60)
        finally:
            agent.stop()
    facts = ticket["evidence"]["facts"]
    assert 4950 < facts["offset_ms"] < 5050
    assert ticket["rule_id"] == "NTP-CLOCK" and ticket["severity"] == "medium"
    # The measured offset, e.g. 5000.4 or 4999.99 (a few ms of jitter either way), and the bound it broke.
    assert re.search(r"offset_ms is (49|50)\d\d", ticket["title"]) and "beyond +/-250" in ticket["title"]
    (result,) = [f for f in json.loads(ctl.vigil("findings", "list", "--check", "ntp", "--json").stdout)
                 if f["asset"] == agent_id]
    assert result["status"] == "fail" and result["refs"] == ["TWSE-CC CC-17020 b(f)"]
