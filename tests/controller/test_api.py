"""The REST API in process (FastAPI's test client over the real app and a real SQLite database)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.baselines import MAX_BYTES
from controller.core import Controller, ControllerConfig
from controller.domain.tickets import RuleRef, apply_outcomes
from controller.domain.users import create_api_key, create_user
from controller.judges.base import Observation
from controller.rest.app import create_app
from controller.storage.models import Agent
from tests.controller.test_baselines import LIMIT_CASES

PASSWORD = "Correct-Horse-42-battery"


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Iterator[tuple[TestClient, dict[str, str], int]]:
    ctl = Controller.open(ControllerConfig(data_dir=tmp_path, db_url=db_url))
    keys = {}
    now = dt.datetime.now(dt.UTC)
    with ctl.sessions.begin() as s:
        for role in ("viewer", "analyst", "admin"):
            create_user(s, role, role, PASSWORD, "test")
            keys[role] = create_api_key(s, role, "test")
        s.add(Agent(id="agt-1", hostname="web1", enrolled_at=now, cert_serial="1", cert_not_after=now,
                    tags=["linux"], status="online", max_sequence=0))
        s.flush()
        ref = RuleRef("PORTS-ALLOWED", "ports", "high", ("TPEx-CPA 3(10)5",), "tw-securities-linux", 1)
        (ticket,) = apply_outcomes(s, "agt-1", "web1", ref, [Observation("tcp/0.0.0.0:8000", "fail", "bad", {})], now,
                                   None)
        tid = ticket.id
    with TestClient(create_app(ctl)) as client:
        yield client, keys, tid
    ctl.writer.shutdown()
    ctl.sessions.kw["bind"].dispose()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_requires_an_api_key(env) -> None:
    client, _, _ = env
    assert client.get("/api/v1/tickets").status_code == 401
    assert client.get("/api/v1/tickets", headers=auth("vk_nope_nope")).status_code == 401
    assert client.get("/api/v1/healthz").json()["status"] == "ok"


def test_ticket_fields_match_the_contract(env) -> None:
    client, keys, tid = env
    (t,) = client.get("/api/v1/tickets?status=open", headers=auth(keys["viewer"])).json()
    assert t["id"] == tid and t["check"] == "ports" and t["severity"] == "high" and t["status"] == "open"
    assert t["first_seen"].endswith("Z") and t["initial_report_due"].endswith("Z")
    assert t["occurrences"] == 1 and t["refs"] == ["TPEx-CPA 3(10)5"] and t["asset"] == "agt-1"


def test_viewer_cannot_transition_analyst_can_and_illegal_is_409(env) -> None:
    client, keys, tid = env
    url = f"/api/v1/tickets/{tid}/transition"
    assert client.post(url, json={"to": "acknowledged"}, headers=auth(keys["viewer"])).status_code == 403
    r = client.post(url, json={"to": "acknowledged"}, headers=auth(keys["analyst"]))
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    assert client.post(url, json={"to": "closed"}, headers=auth(keys["analyst"])).status_code == 409
    assert client.post(url, json={"to": "false_positive"}, headers=auth(keys["analyst"])).status_code == 422
    r = client.post(url, json={"to": "false_positive", "reason": "lab box"}, headers=auth(keys["analyst"]))
    assert r.status_code == 200 and r.json()["status"] == "false_positive"
    timeline = client.get(f"/api/v1/tickets/{tid}", headers=auth(keys["viewer"])).json()["timeline"]
    assert [(e["from"], e["to"], e["actor"]) for e in timeline if e["kind"] == "transition"] == [
        ("open", "acknowledged", "analyst"), ("acknowledged", "false_positive", "analyst")]


def test_only_admin_changes_baselines_and_bad_one_is_rejected_whole(env) -> None:
    client, keys, _ = env
    before = client.get("/api/v1/baselines/tw-securities-linux", headers=auth(keys["viewer"])).json()
    v = before["version"]
    good = before["source"].replace(f"version: {v}\n", f"version: {v + 1}\n", 1)
    url = "/api/v1/baselines/tw-securities-linux"
    headers = {"Content-Type": "application/yaml"}
    assert client.put(url, content=good, headers={**headers, **auth(keys["analyst"])}).status_code == 403
    bad = good.replace("severity: high", "severity: severe", 1)
    r = client.put(url, content=bad, headers={**headers, **auth(keys["admin"]), "X-Vigil-Filename": "mine.yaml"})
    assert r.status_code == 422
    (problem,) = r.json()["problems"]
    assert problem["file"] == "mine.yaml" and problem["field"].endswith(".severity") and problem["line"] > 1
    assert client.get(url, headers=auth(keys["viewer"])).json() == before
    stale = client.put(url, content=before["source"], headers={**headers, **auth(keys["admin"])})
    assert stale.status_code == 409 and "must be greater" in stale.json()["detail"]
    ok = client.put(url, content=good, headers={**headers, **auth(keys["admin"])})
    assert ok.status_code == 200 and ok.json()["version"] == v + 1


def test_openapi_document_is_served(env) -> None:
    client, _, _ = env
    doc = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/tickets/{ticket_id}/transition" in doc["paths"]


def test_assign_report_and_false_positive_with_exception_over_rest(env) -> None:
    client, keys, tid = env
    a = auth(keys["analyst"])
    r = client.post(f"/api/v1/tickets/{tid}/assign", json={"assignee": "analyst"}, headers=a)
    assert r.status_code == 200 and r.json()["assignee"] == "analyst"
    assert client.post(f"/api/v1/tickets/{tid}/assign", json={"assignee": "viewer"}, headers=a).status_code == 422
    assert client.post(f"/api/v1/tickets/{tid}/assign", json={"assignee": "x"},
                       headers=auth(keys["viewer"])).status_code == 403
    r = client.post(f"/api/v1/tickets/{tid}/reports", json={"stage": "formal", "text": "x"}, headers=a)
    assert r.status_code == 409 and "initial report" in r.json()["detail"]
    r = client.post(f"/api/v1/tickets/{tid}/reports", json={"stage": "initial", "text": "seen"}, headers=a)
    assert r.status_code == 201 and r.json()["next_report"] == "formal"
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
    r = client.post(f"/api/v1/tickets/{tid}/transition", headers=a, json={
        "to": "false_positive", "reason": "dev server on the lab VLAN",
        "exception": {"owner": "admin", "expires": expires}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "false_positive" and body["exception"]["owner"] == "admin"
    assert body["exception"]["state"] == "active" and body["exception"]["reason"] == "dev server on the lab VLAN"
    (exc,) = client.get("/api/v1/exceptions?state=active", headers=auth(keys["viewer"])).json()
    assert exc["id"] == body["exception_id"] and exc["ticket_id"] == tid and exc["covered_findings"] == 0
    assert client.post(f"/api/v1/exceptions/{exc['id']}/revoke", json={},
                       headers=auth(keys["viewer"])).status_code == 403
    r = client.post(f"/api/v1/exceptions/{exc['id']}/revoke", json={"reason": "done"}, headers=auth(keys["admin"]))
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    assert client.get("/api/v1/exceptions?state=bogus", headers=a).status_code == 422


def test_metrics_count_pending_notifications(env) -> None:
    client, keys, tid = env
    client.post(f"/api/v1/tickets/{tid}/comments", json={"text": "seen"}, headers=auth(keys["analyst"]))
    text = client.get("/api/v1/metrics").text
    # No notification targets are configured in this process: the messages wait for the worker's fan-out.
    assert 'vigil_notifications_pending{target="*"} 2.0' in text


@pytest.mark.parametrize(("data", "expected"), [pytest.param(d, e, id=i) for i, d, e in LIMIT_CASES])
def test_bad_baseline_input_is_refused_in_one_line_and_nothing_changes(env, data: bytes, expected: str) -> None:
    client, keys, _ = env
    url = "/api/v1/baselines/tw-securities-linux"
    before = client.get(url, headers=auth(keys["viewer"])).json()
    headers = {"Content-Type": "application/yaml", "X-Vigil-Filename": "lim.yaml", **auth(keys["admin"])}
    r = client.put(url, content=data, headers=headers)
    assert r.status_code == (413 if len(data) > MAX_BYTES else 422)
    assert r.json()["detail"] == expected.format(f="lim.yaml")
    assert len(r.json()["problems"]) == 1
    assert client.get(url, headers=auth(keys["viewer"])).json() == before


def test_a_baseline_body_is_read_no_further_than_the_limit(env) -> None:
    # Straight to the ASGI app, which pulls the body chunk by chunk as a server hands it over (the test
    # client would read all of it first). 50 MiB without a Content-Length: only reading tells the size.
    client, keys, _ = env
    chunk = b"#" * (1024 * 1024)
    pulled: list[int] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        pulled.append(1)
        return {"type": "http.request", "body": chunk, "more_body": len(pulled) < 50}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path = "/api/v1/baselines/tw-securities-linux"
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"authorization", f"Bearer {keys['admin']}".encode()),
                         (b"content-type", b"application/yaml"), (b"transfer-encoding", b"chunked")],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    asyncio.run(client.app(scope, receive, send))
    assert sent[0]["status"] == 413
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["detail"] == "tw-securities-linux.yaml: the file is larger than the 1024 KiB a baseline may hold"
    assert len(pulled) == 2  # one mebibyte, then the byte too many


def test_a_declared_length_over_the_limit_is_refused_unread(env) -> None:
    client, keys, _ = env
    r = client.put("/api/v1/baselines/tw-securities-linux", content=b"x",
                   headers={"Content-Length": str(50 * 1024 * 1024), **auth(keys["admin"])})
    assert r.status_code == 413
    assert r.json()["detail"] == ("tw-securities-linux.yaml: the file is 52428800 bytes, more than the 1024 KiB "
                                  "a baseline may hold")


def test_a_json_body_that_is_not_utf8_is_refused_by_offset(env) -> None:
    client, keys, _ = env
    r = client.put("/api/v1/baselines/tw-securities-linux", content=b'{"yaml": "\xff"}',
                   headers={"Content-Type": "application/json", **auth(keys["admin"])})
    assert r.status_code == 422
    assert r.json()["detail"] == "tw-securities-linux.yaml:1: not UTF-8 at byte 10"
def test_bad_query_values_and_bodies_are_422_naming_the_field(env) -> None:
    client, keys, tid = env
    v = auth(keys["viewer"])
    for url, where in (("/api/v1/tickets?limit=0", "query.limit"), ("/api/v1/findings?status=maybe", "query.status"),
                       (f"/api/v1/tickets/{2**63}", "path.ticket_id"), ("/api/v1/tickets/abc", "path.ticket_id")):
        r = client.get(url, headers=v)
        assert r.status_code == 422, url
        assert r.json()["detail"][0]["msg"].startswith(where + ": "), r.json()
    r = client.get("/api/v1/tickets?status=open,bogus", headers=v)
    assert r.status_code == 422 and "bogus is not one of" in r.json()["detail"]
    r = client.post(f"/api/v1/tickets/{tid}/transition", json=["to", "closed"], headers=auth(keys["analyst"]))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]
    r = client.post(f"/api/v1/tickets/{tid}/transition", json={"reason": "x"}, headers=auth(keys["analyst"]))
    assert r.status_code == 422 and r.json()["detail"][0]["msg"] == "body.to: Field required"
    assert client.get("/api/v1/tickets/999999", headers=v).json() == {"detail": "no ticket 999999"}


def test_revocation_reaches_the_agent_channel_through_the_controller(env) -> None:
    client, keys, _ = env
    ctl = client.app.state.vigil
    closed: list[str] = []
    ctl.on_agent_revoked.append(closed.append)
    assert client.post("/api/v1/agents/agt-1/revoke", json={"reason": "x"},
                       headers=auth(keys["analyst"])).status_code == 403
    r = client.post("/api/v1/agents/agt-1/revoke", headers=auth(keys["admin"]))
    assert r.status_code == 200 and r.json()["revoked"] is True and r.json()["status"] == "revoked"
    assert closed == ["agt-1"]
    assert client.post("/api/v1/agents/nope/revoke", headers=auth(keys["admin"])).status_code == 404
    assert closed == ["agt-1"]


def test_sweeps_are_sent_through_the_wired_dispatch_and_remembered(env) -> None:
    client, keys, _ = env
    ctl = client.app.state.vigil
    a = auth(keys["analyst"])
    r = client.post("/api/v1/sweeps", json={"checks": ["ports"]}, headers=a)
    assert r.status_code == 503 and r.json() == {"detail": "the agent channel is not running"}
    asked: list[tuple[object, object]] = []

    def dispatch(agents, checks):
        asked.append((agents, checks))
        return ["agt-1"]

    ctl.sweeps.dispatch = dispatch
    ctl.agent_streams = lambda: 1
    r = client.post("/api/v1/sweeps", json={"checks": ["ports"]}, headers=a)
    assert r.status_code == 200, r.text
    sweep = r.json()
    assert sweep["agents"] == ["agt-1"] and sweep["checks"] == ["ports"] and sweep["requested_by"] == "analyst"
    assert asked == [(None, ["ports"])]
    assert client.get(f"/api/v1/sweeps/{sweep['id']}", headers=auth(keys["viewer"])).json() == sweep
    assert client.get("/api/v1/sweeps/nope", headers=auth(keys["viewer"])).status_code == 404
    assert client.post("/api/v1/sweeps", json={"checks": [""]}, headers=a).status_code == 422
    assert "vigil_agent_streams 1.0" in client.get("/api/v1/metrics").text



def test_response_models_carry_every_field_the_domain_gives(env) -> None:
    """A response model drops what it does not declare: each must declare every key of the JSON form it types."""
    from pydantic import BaseModel
    from sqlalchemy import select

    from controller.domain import changes as change_domain
    from controller.domain import exceptions as risk
    from controller.domain import workflow
    from controller.rest.agents import AgentOut
    from controller.rest.changes import ChangeDetail
    from controller.rest.exceptions import RiskExceptionOut
    from controller.rest.findings import FindingOut
    from controller.rest.tickets import TicketDetail
    from controller.storage.models import Finding
    from controller.storage.serialize import agent_json, finding_json

    client, keys, tid = env
    ctl = client.app.state.vigil
    start = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    r = client.post("/api/v1/changes", headers=auth(keys["analyst"]), json={
        "assets": ["agt-1"], "paths": ["/etc/**"], "start": start.isoformat(),
        "end": (start + dt.timedelta(hours=1)).isoformat(), "reason": "patching"})
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/exceptions", headers=auth(keys["analyst"]), json={
        "rule_id": "PORTS-ALLOWED", "assets": ["agt-1"], "owner": "admin", "reason": "lab",
        "expires": (start + dt.timedelta(days=1)).isoformat()})
    assert r.status_code == 201, r.text

    def names(model: type[BaseModel]) -> set[str]:
        return {f.alias or n for n, f in model.model_fields.items()}

    with ctl.sessions() as s:
        agent = s.get(Agent, "agt-1")
        finding = s.execute(select(Finding)).scalars().first()
        assert agent is not None and finding is not None
        assert set(agent_json(agent)) == names(AgentOut)
        assert set(finding_json(finding)) == names(FindingOut)
        detail = workflow.ticket_detail(s, workflow.get_ticket(s, tid))
        assert set(detail) == names(TicketDetail)
        (change,) = change_domain.list_changes(s)
        assert set(change_domain.change_json(change, s, 10)) == names(ChangeDetail)
        (exc,) = risk.list_exceptions(s)
        assert set(risk.exception_json(exc, s)) == names(RiskExceptionOut)
