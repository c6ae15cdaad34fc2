"""The spine end to end: real controller and agent processes, real mutual TLS on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.harness import AgentProc, Controller, listener, wait_for


def allow_current_listeners() -> list[str]:
    ports = set()
    for c in psutil.net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr):
            ports.add(("tcp" if c.type == 1 else "udp", c.laddr.port))
    return [f"{proto}/{port}" for proto, port in sorted(ports)]


def baseline_yaml(version: int, allow: list[str], name: str = "tw-securities-linux") -> str:
    entries = "\n".join(f'          - "{a}"' for a in allow)
    return f"""baseline: {name}
version: {version}
rules:
  - id: AGENT-CONTACT
    check: agent
    severity: high
    interval: 10s
    expect: {{max_silence: 3m, dropped_records: {{max: 0}}}}
    refs: ["TPEx-CPA 3(8)4(2)"]
  - id: PORTS-ALLOWED
    check: ports
    severity: high
    interval: 10s
    expect:
      listening:
        allow:
{entries}
    refs: ["TPEx-CPA 3(10)5", "SFA-ETG Art.8"]
"""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Controller, AgentProc, str]]:
    ctl = Controller(tmp_path / "controller")
    ctl.start()
    agent = AgentProc(tmp_path / "agent")
    agent_id = agent.enroll(ctl)
    agent.start()
    try:
        yield ctl, agent, agent_id
    finally:
        agent.stop()
        ctl.stop()


def tickets_for(ctl: Controller, port: int) -> list[dict]:
    out = ctl.vigil("tickets", "list", "--json").stdout
    return [t for t in json.loads(out) if t["check"] == "ports" and t["subject"].endswith(f":{port}")]


def test_unexpected_listener_opens_one_ticket_and_closing_resolves_it(stack, tmp_path: Path) -> None:
    ctl, _agent, agent_id = stack
    allow = [*allow_current_listeners(), f"tcp/{ctl.grpc_port}", f"tcp/{ctl.enroll_port}", f"tcp/{ctl.http_port}"]
    path = tmp_path / "ports.yaml"
    path.write_text(baseline_yaml(10, allow))
    out = ctl.vigil("baseline", "apply", str(path)).stdout
    assert "version 10" in out

    agents = wait_for("the agent online", lambda: [a for a in json.loads(ctl.vigil("agents", "list", "--json").stdout)
                                                  if a["id"] == agent_id and a["status"] == "online"])
    assert set(agents[0]) >= {"id", "hostname", "status", "last_seen", "tags", "version"}
    assert agents[0]["last_seen"].endswith("Z")

    with listener() as port:
        ctl.vigil("sweep", "run", "--checks", "ports")
        tickets = wait_for(f"a ports ticket for port {port}", lambda: tickets_for(ctl, port))
        assert len(tickets) == 1
        t = tickets[0]
        for key in ("id", "title", "severity", "status", "asset", "check", "rule_id", "refs", "first_seen",
                    "last_seen", "occurrences", "initial_report_due"):
            assert key in t, key
        assert t["status"] == "open" and t["severity"] == "high" and t["rule_id"] == "PORTS-ALLOWED"
        assert t["asset"] == agent_id
        assert t["baseline"] == "tw-securities-linux" and t["baseline_version"] == 10  # pushed, no restart
        assert t["refs"] == ["TPEx-CPA 3(10)5", "SFA-ETG Art.8"]
        assert t["initial_report_due"] is not None
        assert t["evidence"]["port"] == port and t["evidence"]["pid"] > 0

        # The same listener seen again raises occurrences on the same ticket, never a second ticket.
        ctl.vigil("sweep", "run", "--checks", "ports")
        again = wait_for("a second occurrence", lambda: [x for x in tickets_for(ctl, port) if x["occurrences"] >= 2])
        assert len(tickets_for(ctl, port)) == 1 and again[0]["id"] == t["id"]

    ctl.vigil("sweep", "run", "--checks", "ports")
    resolved = wait_for("the ticket resolved", lambda: [x for x in tickets_for(ctl, port) if x["status"] == "resolved"])
    assert resolved[0]["id"] == t["id"]
    detail = json.loads(ctl.vigil("tickets", "show", str(t["id"]), "--json").stdout)
    kinds = [e["kind"] for e in detail["timeline"]]
    assert kinds[0] == "opened" and kinds[-1] == "auto_resolved"
    assert "no longer observed" in detail["resolution"]

    # The whole story is in the audit log, and the chain verifies.
    verify = ctl.vigil("audit", "verify", "--json")
    assert json.loads(verify.stdout)["ok"] is True


def test_malformed_baseline_is_refused_and_running_one_stays(stack, tmp_path: Path) -> None:
    ctl, _agent, _ = stack
    before = ctl.api("GET", "/baselines/tw-securities-linux")
    bad = tmp_path / "bad.yaml"
    bad.write_text(baseline_yaml(9, ["tcp/22 sshd"]).replace("severity: high\n    interval: 10s\n    expect:\n",
                                                             "severity: urgent\n    interval: 10s\n    expect:\n"))
    proc = ctl.vigil("baseline", "apply", str(bad), check=False)
    assert proc.returncode == 1
    assert "bad.yaml:" in proc.stderr and "severity" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) >= 1 and "Traceback" not in proc.stderr
    after = ctl.api("GET", "/baselines/tw-securities-linux")
    assert after == before
