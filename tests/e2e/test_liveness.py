"""An agent that stops sending heartbeats goes offline, then lost with a ticket; coming back resolves it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.harness import AgentProc, Controller, wait_for

BASELINE = """baseline: tw-securities-linux
version: 10
rules:
  - id: AGENT-CONTACT
    check: agent
    severity: high
    interval: 10s
    expect: {max_silence: 10s, dropped_records: {max: 0}}
    refs: ["TPEx-CPA 3(8)4(2)"]
"""


def test_silent_agent_goes_lost_with_a_ticket_and_recovers(tmp_path: Path) -> None:
    ctl = Controller(tmp_path / "controller", heartbeat="1s")
    ctl.start()
    agent = AgentProc(tmp_path / "agent")
    try:
        agent_id = agent.enroll(ctl)
        (tmp_path / "b.yaml").write_text(BASELINE)
        ctl.vigil("baseline", "apply", str(tmp_path / "b.yaml"))
        agent.start()
        wait_for("agent online", lambda: ctl.api("GET", f"/agents/{agent_id}")["status"] == "online")
        agent.stop()

        wait_for("agent offline", lambda: ctl.api("GET", f"/agents/{agent_id}")["status"] in ("offline", "lost"),
                 timeout=20)
        lost = wait_for("agent lost", lambda: ctl.api("GET", f"/agents/{agent_id}")["status"] == "lost", timeout=40)
        assert lost
        tickets = [t for t in ctl.api("GET", "/tickets") if t["asset"] == agent_id and t["check"] == "agent"]
        assert len(tickets) == 1
        t = tickets[0]
        assert t["status"] == "open" and t["rule_id"] == "AGENT-CONTACT" and t["subject"] == "contact"
        assert "lost contact" in t["title"] and t["refs"] == ["TPEx-CPA 3(8)4(2)"]

        agent.start()
        wait_for("agent back online", lambda: ctl.api("GET", f"/agents/{agent_id}")["status"] == "online")
        back = wait_for(
            "contact ticket resolved",
            lambda: [x for x in ctl.api("GET", "/tickets") if x["id"] == t["id"] and x["status"] == "resolved"],
        )
        assert "heartbeats resumed" in back[0]["resolution"]
        assert json.loads(ctl.vigil("audit", "verify", "--json").stdout)["ok"]
    finally:
        agent.stop()
        ctl.stop()
