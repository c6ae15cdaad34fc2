"""``GET /agents``, ``GET /agents/{agent_id}``, ``GET /agents/{agent_id}/quarantine``,
``POST /agents/{agent_id}/revoke`` (admin)."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from common.errors import UsageError
from controller.domain import integrity
from controller.errors import NotFound
from controller.rest.common import AUTH, Admin, Ctl, Db, Reason, Viewer, errors
from controller.rest.findings import FindingOut
from controller.storage.models import Agent, Finding, QuarantinedReport
from controller.storage.serialize import agent_json, finding_json, rfc3339

router = APIRouter(tags=["agents"])
# Quarantined reports listed with their bytes at most, per request.
MAX_RAW_LIST = 20


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
    spool_incarnation: str = Field(description="the agent's current spool incarnation (\"\" before incarnations)")
    incarnations: int = Field(description="spool incarnations recorded: more than one means the spool was recreated")
    gaps: int = Field(description="ranges of sequences that never arrived")
    quarantined: int = Field(description="reports the controller refused and kept: GET .../quarantine")


class QuarantinedOut(BaseModel):
    """A report the controller refused, kept as received (the first MAX_QUARANTINE_BYTES of it)."""

    id: int
    agent_id: str
    incarnation: str
    sequence: str = Field(description="as sent, in decimal (a uint64: it may exceed 2^63 - 1)")
    check_id: str
    received_at: str | None
    reason: str
    size: int = Field(description="bytes of the whole report")
    sha256: str = Field(description="of the whole report")
    kept: int = Field(description="bytes kept (the report, cut at 1 MiB)")
    raw: str | None = Field(description="the kept bytes in base64, with ?raw=true only")


@router.get("/agents", response_model=list[AgentOut], responses=errors(*AUTH))
def list_agents(s: Db, _: Viewer) -> list[dict[str, Any]]:
    return [agent_json(a) for a in s.execute(select(Agent).order_by(Agent.hostname, Agent.id)).scalars()]


@router.get("/agents/{agent_id}", response_model=AgentDetail, responses=errors(*AUTH, 404))
def get_agent(agent_id: str, s: Db, _: Viewer) -> dict[str, Any]:
    a = s.get(Agent, agent_id)
    if a is None:
        raise NotFound(f"no agent {agent_id!r}")
    findings = s.execute(select(Finding).where(Finding.asset == agent_id).order_by(Finding.rule_id, Finding.subject))
    return {**agent_json(a), "findings": [finding_json(f) for f in findings.scalars()],
            "spool_incarnation": a.incarnation, **integrity.counts(s, agent_id)}


def _quarantined_json(q: QuarantinedReport, raw: bool) -> dict[str, Any]:
    return {"id": q.id, "agent_id": q.agent_id, "incarnation": q.incarnation, "sequence": q.sequence,
            "check_id": q.check_id, "received_at": rfc3339(q.received_at), "reason": q.reason, "size": q.size,
            "sha256": q.sha256, "kept": len(q.raw), "raw": base64.b64encode(q.raw).decode() if raw else None}


@router.get("/agents/{agent_id}/quarantine", response_model=list[QuarantinedOut], responses=errors(*AUTH, 404))
def agent_quarantine(agent_id: str, s: Db, _: Viewer, limit: Annotated[int, Query(ge=1, le=10000)] = 100,
                     raw: Annotated[bool, Query(description="include each report's kept bytes (base64)")] = False,
                     ) -> list[dict[str, Any]]:
    """The reports the controller refused from this agent and kept, newest first; with ``raw=true`` at most
    MAX_RAW_LIST of them, each carrying up to 1 MiB."""
    if raw and limit > MAX_RAW_LIST:
        raise UsageError(f"query.limit: at most {MAX_RAW_LIST} reports with raw=true (each carries up to 1 MiB), "
                         f"not {limit}")
    if s.get(Agent, agent_id) is None:
        raise NotFound(f"no agent {agent_id!r}")
    return [_quarantined_json(q, raw) for q in integrity.quarantined(s, agent_id, limit)]


@router.post("/agents/{agent_id}/revoke", response_model=AgentOut, responses=errors(*AUTH, 400, 404))
def revoke_agent(agent_id: str, user: Admin, ctl: Ctl, body: Reason | None = None) -> dict[str, Any]:
    """Revoke the agent's certificate; its open stream is closed and it is refused from then on."""
    return ctl.revoke_agent(agent_id, user.username, (body.reason if body else "") or "")
