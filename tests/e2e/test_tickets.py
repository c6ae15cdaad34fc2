"""Working a ticket with the operator CLI against a real controller process, fed by a real mTLS stream."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tests.e2e.harness import PASSWORD, AgentProc, AgentStream, Controller, cli, ports_report, wait_for


@pytest.fixture
def ctl(controller: Controller) -> Controller:
    return controller


def analyst(ctl: Controller, name: str) -> str:
    cli("vigil-controller", "user", "create", "--data-dir", str(ctl.data_dir), "--username", name,
        "--role", "analyst", "--password-stdin", input=PASSWORD + "\n")
    return ctl.api_key(name)


def as_user(ctl: Controller, key: str, *args: str, check: bool = True) -> dict:
    out = cli("vigil", "--url", ctl.url, "--api-key", key, "--json", *args, check=check)
    return json.loads(out.stdout) if check else {"rc": out.returncode, "stderr": out.stderr}


def rogue_ticket(ctl: Controller, tmp_path: Path, seq: int) -> dict:
    agent_dir = tmp_path / "fake-agent"
    if not (agent_dir / "agent.pem").exists():
        AgentProc(agent_dir).enroll(ctl)
    with AgentStream.of(ctl.address, agent_dir) as stream:
        stream.hello()
        stream.send(ports_report(seq, port=2222))
        stream.next("ack")
    return wait_for("the rogue listener's ticket", lambda: [
        t for t in ctl.api("GET", "/tickets") if t["subject"] == "tcp/0.0.0.0:2222"])[0]


def test_a_ticket_is_worked_to_closed_from_the_cli_and_the_audit_log_verifies(ctl: Controller, tmp_path: Path) -> None:
    alice, bob = analyst(ctl, "alice"), analyst(ctl, "bob")
    ticket = rogue_ticket(ctl, tmp_path, 1)
    tid = str(ticket["id"])
    assert ticket["status"] == "open" and ticket["severity"] == "high" and ticket["initial_report_due"]

    assert as_user(ctl, alice, "tickets", "assign", tid, "bob")["assignee"] == "bob"
    assert as_user(ctl, bob, "tickets", "transition", tid, "--to", "acknowledged")["status"] == "acknowledged"
    assert as_user(ctl, bob, "tickets", "report", tid, "--stage", "initial", "--text", "rogue on 2222")[
        "next_report"] == "formal"
    as_user(ctl, bob, "tickets", "comment", tid, "process /tmp/rogue killed")
    assert as_user(ctl, bob, "tickets", "transition", tid, "--to", "in_progress")["status"] == "in_progress"
    as_user(ctl, bob, "tickets", "report", tid, "--stage", "formal", "--text", "left by a test run")
    refused = as_user(ctl, bob, "tickets", "report", tid, "--stage", "closure", "--text", "x", check=False)
    assert refused["rc"] == 1 and "resolve it" in refused["stderr"]
    as_user(ctl, bob, "tickets", "transition", tid, "--to", "resolved", "--reason", "binary removed")
    as_user(ctl, bob, "tickets", "report", tid, "--stage", "closure", "--text", "verified")
    done = as_user(ctl, alice, "tickets", "transition", tid, "--to", "closed")
    assert done["status"] == "closed"
    assert [r["stage"] for r in done["reports"]] == ["initial", "formal", "closure"]
    assert [e["kind"] for e in done["timeline"]] == [
        "opened", "assigned", "transition", "report", "comment", "transition", "report", "transition", "report",
        "transition"]

    verify = as_user(ctl, alice, "audit", "verify")
    assert verify["ok"] and verify["entries"] > 10


def test_false_positive_exception_holds_then_revoking_it_reopens_the_ticket(ctl: Controller, tmp_path: Path) -> None:
    alice = analyst(ctl, "alice")
    tid = str(rogue_ticket(ctl, tmp_path, 1)["id"])
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=14)).isoformat(timespec="seconds").replace("+00:00", "Z")
    bad = as_user(ctl, alice, "tickets", "transition", tid, "--to", "false_positive", check=False)
    assert bad["rc"] == 1 and "needs a reason" in bad["stderr"]
    fp = as_user(ctl, alice, "tickets", "transition", tid, "--to", "false_positive", "--reason",
                 "lab sshd on 2222", "--exception-owner", "alice", "--exception-expires", expires)
    assert fp["status"] == "false_positive" and fp["exception"]["state"] == "active"
    exc_id = fp["exception"]["id"]

    # The same failure again: recorded against the exception, the ticket stays a false positive.
    rogue_ticket(ctl, tmp_path, 2)
    finding = wait_for("the finding to be counted under the exception", lambda: [
        f for f in ctl.api("GET", "/findings?status=fail&check=ports") if f["exception_id"] == exc_id])[0]
    assert finding["subject"] == "tcp/0.0.0.0:2222"
    t = ctl.api("GET", f"/tickets/{tid}")
    assert t["status"] == "false_positive" and t["occurrences"] == 2

    as_user(ctl, alice, "exceptions", "revoke", exc_id, "--reason", "lab gone")
    reopened = ctl.api("GET", f"/tickets/{tid}")
    assert reopened["status"] == "open" and reopened["reopened"] == 1
    assert f"exception {exc_id} revoked" in reopened["timeline"][-1]["text"]
    listed = as_user(ctl, alice, "exceptions", "list")
    assert [(e["id"], e["state"], e["owner"]) for e in listed] == [(exc_id, "revoked", "alice")]
