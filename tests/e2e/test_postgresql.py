"""The controller on PostgreSQL end to end: ``vigil-controller serve --db postgresql://...`` as a real
process, a real agent enrolled over TLS, and a report ingested through the real path into a ticket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url

from controller.storage.models import Agent, AuditEntry, Result, Ticket
from tests.e2e.harness import AgentProc, Controller, cli, listener, wait_for
from tests.e2e.test_spine import allow_current_listeners, baseline_yaml, tickets_for


@pytest.fixture
def stack(tmp_path: Path, pg_url: str) -> Iterator[tuple[Controller, AgentProc, str, str]]:
    # The URL as an operator writes it: plain postgresql://, which the controller takes to mean psycopg 3.
    url = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    ctl = Controller(tmp_path / "controller", db_url=url)
    ctl.start()
    agent = AgentProc(tmp_path / "agent")
    try:
        agent_id = agent.enroll(ctl)
        agent.start()
        yield ctl, agent, agent_id, url
    finally:
        agent.stop()
        ctl.stop()


def test_a_report_is_stored_and_judged_in_postgresql(stack: tuple[Controller, AgentProc, str, str],
                                                     tmp_path: Path) -> None:
    ctl, _agent, agent_id, url = stack
    # Nothing of the database lives in the data directory; only the PKI does.
    assert not (ctl.data_dir / "controller.db").exists()
    allow = [*allow_current_listeners(), f"tcp/{ctl.grpc_port}", f"tcp/{ctl.enroll_port}", f"tcp/{ctl.http_port}"]
    path = tmp_path / "ports.yaml"
    path.write_text(baseline_yaml(10, allow))
    ctl.vigil("baseline", "apply", str(path))
    wait_for("the agent online", lambda: [a for a in json.loads(ctl.vigil("agents", "list", "--json").stdout)
                                         if a["id"] == agent_id and a["status"] == "online"])
    with listener() as port:
        ctl.vigil("sweep", "run", "--checks", "ports")
        (ticket,) = wait_for(f"a ports ticket for port {port}", lambda: tickets_for(ctl, port))
    assert ticket["status"] == "open" and ticket["severity"] == "high"

    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            assert conn.execute(select(Agent.id)).scalars().all() == [agent_id]
            assert conn.execute(select(func.count()).select_from(Result)
                                .where(Result.agent_id == agent_id, Result.check_id == "ports")).scalar_one() >= 1
            assert conn.execute(select(Ticket.subject).where(Ticket.id == ticket["id"])).scalar_one().endswith(
                f":{port}")
            assert conn.execute(select(func.count()).select_from(AuditEntry)).scalar_one() > 0
    finally:
        engine.dispose()
    verified = cli("vigil-controller", "audit", "verify", "--data-dir", str(ctl.data_dir), "--db", url)
    assert verified.stdout.startswith("audit log verified:")
