"""``GET /agents``, ``GET /agents/{agent_id}``, ``POST /agents/{agent_id}/revoke`` (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from controller.errors import NotFound
from controller.rest.common import AUTH, Admin, Ctl, Db, Reason, Viewer, errors
from controller.rest.findings import FindingOut
from controller.storage.models import Agent, Finding
from controller.storage.serialize import agent_json, finding_json

router = APIRouter(tags=["agents"])


class AgentOut(BaseModel):
    id: str
    hostname: str
    status: str  # online | offline | lost | revoked
    last_seen: str | None
    tags: list[str]
    version: str
    os: str
    enrolled_at: str | None
    revoked: bool
    spool_depth: int
    dropped_records: int
    checks: list[Any]
    cert_not_after: str | None


class AgentDetail(AgentOut):
    findings: list[FindingOut]


@router.get("/agents", response_model=list[AgentOut], responses=errors(*AUTH))
def list_agents(s: Db, _: Viewer) -> list[dict[str, Any]]:
    return [agent_json(a) for a in s.execute(select(Agent).order_by(Agent.hostname, Agent.id)).scalars()]


@router.get("/agents/{agent_id}", response_model=AgentDetail, responses=errors(*AUTH, 404))
def get_agent(agent_id: str, s: Db, _: Viewer) -> dict[str, Any]:
    a = s.get(Agent, agent_id)
    if a is None:
        raise NotFound(f"no agent {agent_id!r}")
    findings = s.execute(select(Finding).where(Finding.asset == agent_id).order_by(Finding.rule_id, Finding.subject))
    return {**agent_json(a), "findings": [finding_json(f) for f in findings.scalars()]}


@router.post("/agents/{agent_id}/revoke", response_model=AgentOut, responses=errors(*AUTH, 400, 404))
def revoke_agent(agent_id: str, user: Admin, ctl: Ctl, body: Reason | None = None) -> dict[str, Any]:
    """Revoke the agent's certificate; its open stream is closed and it is refused from then on."""
    return ctl.revoke_agent(agent_id, user.username, (body.reason if body else "") or "")
