"""The REST API under /api/v1 (SPEC section 3). JSON in and out, ``Authorization: Bearer <api key>``."""


import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common import __version__
from common.errors import UsageError
from controller import audit, changes, eol
from controller.baselines import BaselineError
from controller.core import Controller
from controller.db.models import Agent, Baseline, Change, Finding, Result, Ticket, TicketEvent, User
from controller.errors import Conflict, Forbidden, NotFound
from controller.grpc_server import AgentChannelService
from controller.users import role_allows, user_for_api_key

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("acknowledged", "in_progress", "resolved", "false_positive"),
    "acknowledged": ("in_progress", "resolved", "false_positive"),
    "in_progress": ("resolved", "false_positive", "acknowledged"),
    "resolved": ("closed", "open"),
    "closed": ("open",),
    "false_positive": ("open", "closed"),
}


def rfc3339(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def agent_json(a: Agent) -> dict[str, Any]:
    return {
        "id": a.id,
        "hostname": a.hostname,
        "status": a.status,
        "last_seen": rfc3339(a.last_seen),
        "tags": list(a.tags),
        "version": a.version,
        "os": a.os,
        "enrolled_at": rfc3339(a.enrolled_at),
        "revoked": a.revoked_at is not None,
        "spool_depth": a.spool_depth,
        "dropped_records": a.dropped_records,
        "checks": a.checks,
        "cert_not_after": rfc3339(a.cert_not_after),
    }


def ticket_json(t: Ticket, hostname: str | None = None) -> dict[str, Any]:
    return {
        "id": t.id,
        "title": t.title,
        "severity": t.severity,
        "status": t.status,
        "asset": t.asset,
        "asset_name": hostname,
        "check": t.check_id,
        "rule_id": t.rule_id,
        "subject": t.subject,
        "refs": list(t.refs),
        "baseline": t.baseline,
        "baseline_version": t.baseline_version,
        "first_seen": rfc3339(t.first_seen),
        "last_seen": rfc3339(t.last_seen),
        "occurrences": t.occurrences,
        "initial_report_due": rfc3339(t.initial_report_due),
        "resolved_at": rfc3339(t.resolved_at),
        "resolution": t.resolution,
        "assignee": t.assignee,
        "evidence": t.evidence,
    }


def finding_json(f: Finding) -> dict[str, Any]:
    return {
        "id": f.id,
        "asset": f.asset,
        "rule_id": f.rule_id,
        "check": f.check_id,
        "subject": f.subject,
        "status": f.status,
        "severity": f.severity,
        "baseline": f.baseline,
        "baseline_version": f.baseline_version,
        "refs": list(f.refs),
        "message": f.message,
        "evidence": f.evidence,
        "first_seen": rfc3339(f.first_seen),
        "last_seen": rfc3339(f.last_seen),
        "result_id": f.result_id,
    }


def create_app(ctl: Controller, channel: AgentChannelService | None = None) -> FastAPI:
    app = FastAPI(
        title="Vigil controller",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    r = APIRouter(prefix="/api/v1")
    sweeps: dict[str, dict[str, Any]] = {}

    def db() -> Iterator[Session]:
        with ctl.sessions() as s:
            yield s

    def current_user(request: Request, s: Annotated[Session, Depends(db)]) -> User:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise HTTPException(401, "missing 'Authorization: Bearer <api key>' header",
                                headers={"WWW-Authenticate": "Bearer"})
        user = user_for_api_key(s, key.strip())
        if user is None:
            raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        return user

    def need(role: str) -> Callable[..., User]:
        def dep(user: Annotated[User, Depends(current_user)]) -> User:
            if not role_allows(user.role, role):
                raise HTTPException(403, f"this needs the {role} role; {user.username} is {user.role}")
            return user

        return dep

    Viewer = Annotated[User, Depends(need("viewer"))]
    Analyst = Annotated[User, Depends(need("analyst"))]
    Admin = Annotated[User, Depends(need("admin"))]
    Db = Annotated[Session, Depends(db)]

    @r.get("/healthz")
    def healthz(s: Db) -> dict[str, Any]:
        s.execute(select(1))
        return {"status": "ok", "version": __version__}

    @r.get("/metrics")
    def metrics(s: Db) -> Response:
        reg = CollectorRegistry()
        agents = Gauge("vigil_agents", "Agents by status", ["status"], registry=reg)
        for status, n in s.execute(select(Agent.status, func.count()).group_by(Agent.status)):
            agents.labels(status).set(n)
        tickets = Gauge("vigil_tickets", "Tickets by status and severity", ["status", "severity"], registry=reg)
        for status, sev, n in s.execute(
            select(Ticket.status, Ticket.severity, func.count()).group_by(Ticket.status, Ticket.severity)
        ):
            tickets.labels(status, sev).set(n)
        results = Gauge("vigil_results_stored", "Results stored", registry=reg)
        results.set(s.execute(select(func.count()).select_from(Result)).scalar_one())
        streams = Gauge("vigil_agent_streams", "Connected agent streams", registry=reg)
        streams.set(len(channel.streams) if channel else 0)
        return Response(generate_latest(reg), media_type=CONTENT_TYPE_LATEST)

    @r.get("/agents")
    def list_agents(s: Db, _: Viewer) -> list[dict[str, Any]]:
        return [agent_json(a) for a in s.execute(select(Agent).order_by(Agent.hostname, Agent.id)).scalars()]

    @r.get("/agents/{agent_id}")
    def get_agent(agent_id: str, s: Db, _: Viewer) -> dict[str, Any]:
        a = s.get(Agent, agent_id)
        if a is None:
            raise HTTPException(404, f"no agent {agent_id!r}")
        out = agent_json(a)
        out["findings"] = [finding_json(f) for f in s.execute(
            select(Finding).where(Finding.asset == agent_id).order_by(Finding.rule_id, Finding.subject)).scalars()]
        return out

    @r.post("/agents/{agent_id}/revoke")
    def revoke_agent(agent_id: str, user: Admin, body: Annotated[dict[str, Any], Body()] | None = None
                     ) -> dict[str, Any]:
        from controller.enrollment import revoke

        reason = str((body or {}).get("reason", ""))
        with ctl.sessions.begin() as s:
            try:
                agent = revoke(s, agent_id, user.username, reason)
            except NotFound as exc:
                raise HTTPException(404, str(exc)) from exc
            out = agent_json(agent)
        if channel is not None:
            stream = channel.streams.get(agent_id)
            if stream is not None and channel.loop is not None:
                channel.loop.call_soon_threadsafe(stream.queue.put_nowait, None)
        return out

    @r.get("/findings")
    def list_findings(
        s: Db, _: Viewer, status: str | None = None, check: str | None = None, asset: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    ) -> list[dict[str, Any]]:
        q = select(Finding)
        if status:
            q = q.where(Finding.status == status)
        if check:
            q = q.where(Finding.check_id == check)
        if asset:
            q = q.where(Finding.asset == asset)
        q = q.order_by(Finding.last_seen.desc()).limit(limit)
        return [finding_json(f) for f in s.execute(q).scalars()]

    def _hostnames(s: Session) -> dict[str, str]:
        return {aid: h for aid, h in s.execute(select(Agent.id, Agent.hostname))}

    @r.get("/tickets")
    def list_tickets(
        s: Db, _: Viewer, status: str | None = None, severity: str | None = None, check: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    ) -> list[dict[str, Any]]:
        q = select(Ticket)
        if status:
            q = q.where(Ticket.status.in_(status.split(",")))
        if severity:
            q = q.where(Ticket.severity.in_(severity.split(",")))
        if check:
            q = q.where(Ticket.check_id == check)
        names = _hostnames(s)
        q = q.order_by(Ticket.last_seen.desc()).limit(limit)
        return [ticket_json(t, names.get(t.asset)) for t in s.execute(q).scalars()]

    @r.get("/tickets/{ticket_id}")
    def get_ticket(ticket_id: int, s: Db, _: Viewer) -> dict[str, Any]:
        t = s.get(Ticket, ticket_id)
        if t is None:
            raise HTTPException(404, f"no ticket {ticket_id}")
        out = ticket_json(t, _hostnames(s).get(t.asset))
        out["timeline"] = [
            {"at": rfc3339(e.at), "actor": e.actor, "kind": e.kind, "from": e.from_status, "to": e.to_status,
             "text": e.text}
            for e in s.execute(select(TicketEvent).where(TicketEvent.ticket_id == t.id)
                               .order_by(TicketEvent.at, TicketEvent.id)).scalars()
        ]
        return out

    @r.post("/tickets/{ticket_id}/transition")
    def transition(ticket_id: int, user: Analyst, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        to = str(body.get("to", ""))
        reason = str(body.get("reason", "") or "")
        if to not in TRANSITIONS:
            raise HTTPException(422, f"'to' must be one of {', '.join(TRANSITIONS)}")
        if to == "false_positive" and not reason.strip():
            raise HTTPException(422, "marking a false positive needs a reason (TPEx-CPA 3(12)5)")
        with ctl.sessions.begin() as s:
            t = s.get(Ticket, ticket_id)
            if t is None:
                raise HTTPException(404, f"no ticket {ticket_id}")
            if to not in TRANSITIONS[t.status]:
                raise HTTPException(409, f"cannot go from {t.status} to {to}; allowed: "
                                         f"{', '.join(TRANSITIONS[t.status])}")
            now = dt.datetime.now(dt.UTC)
            old = t.status
            t.status = to
            if to in ("resolved", "closed", "false_positive"):
                t.resolved_at = t.resolved_at or now
                t.resolution = reason or t.resolution
            else:
                t.resolved_at = None
            s.add(TicketEvent(ticket_id=t.id, at=now, actor=user.username, kind="transition",
                              from_status=old, to_status=to, text=reason))
            audit.record(s, user.username, "ticket.transition", "ticket", str(t.id),
                         {"from": old, "to": to, "reason": reason})
            return ticket_json(t, _hostnames(s).get(t.asset))

    @r.post("/tickets/{ticket_id}/comments")
    def comment(ticket_id: int, user: Analyst, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        text = str(body.get("text", "")).strip()
        if not text:
            raise HTTPException(422, "'text' must not be empty")
        with ctl.sessions.begin() as s:
            t = s.get(Ticket, ticket_id)
            if t is None:
                raise HTTPException(404, f"no ticket {ticket_id}")
            now = dt.datetime.now(dt.UTC)
            s.add(TicketEvent(ticket_id=t.id, at=now, actor=user.username, kind="comment", text=text))
            audit.record(s, user.username, "ticket.comment", "ticket", str(t.id), {"text": text})
        return {"ticket": ticket_id, "at": rfc3339(now), "actor": user.username, "text": text}

    def baseline_json(b: Baseline) -> dict[str, Any]:
        return {"name": b.name, "version": b.version, "applied_at": rfc3339(b.applied_at),
                "applied_by": b.applied_by, "document": b.document, "source": b.source}

    @r.get("/baselines")
    def list_baselines(s: Db, _: Viewer) -> list[dict[str, Any]]:
        return [baseline_json(b) for b in s.execute(select(Baseline).order_by(Baseline.name)).scalars()]

    @r.get("/baselines/{name}")
    def get_baseline(name: str, s: Db, _: Viewer) -> dict[str, Any]:
        b = s.get(Baseline, name)
        if b is None:
            raise HTTPException(404, f"no baseline {name!r}")
        return baseline_json(b)

    @r.put("/baselines/{name}")
    async def put_baseline(name: str, request: Request, user: Admin) -> JSONResponse:
        raw = (await request.body()).decode("utf-8", errors="replace")
        filename = request.headers.get("x-vigil-filename", f"{name}.yaml")
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                raw = str(json.loads(raw)["yaml"])
            except (ValueError, KeyError, TypeError):
                raise HTTPException(422, 'JSON body must be {"yaml": "<baseline text>"}') from None
        try:
            doc = await _in_thread(ctl.apply_baseline, raw, filename, user.username, expect_name=name)
        except BaselineError as exc:
            return JSONResponse({"detail": str(exc), "problems": [
                {"file": filename, "line": ln, "field": fld, "reason": why} for ln, fld, why in exc.problems
            ]}, status_code=422)
        except Conflict as exc:
            raise HTTPException(409, str(exc)) from exc
        except UsageError as exc:
            raise HTTPException(422, str(exc)) from exc
        return JSONResponse({"name": doc.name, "version": doc.version, "rules": [x.id for x in doc.rules]})

    # -- approved changes (TPEx-CPA 3(7)1): analysts request, a different admin approves ----------
    def _change_call(fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
        with ctl.sessions.begin() as s:
            try:
                change = fn(s, *args)
            except UsageError as exc:
                raise HTTPException(422, str(exc)) from exc
            except Forbidden as exc:
                raise HTTPException(403, str(exc)) from exc
            except NotFound as exc:
                raise HTTPException(404, str(exc)) from exc
            except Conflict as exc:
                raise HTTPException(409, str(exc)) from exc
            return changes.change_json(change)

    @r.post("/changes", status_code=201)
    def create_change(user: Analyst, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        """Request a change window: ``{"assets": [...], "paths": [...], "start": T, "end": T, "reason": TEXT}``."""
        return _change_call(changes.create, user.username, body.get("assets"), body.get("paths"),
                            body.get("start"), body.get("end"), body.get("reason"))

    @r.post("/changes/{change_id}/approve")
    def approve_change(change_id: str, user: Admin) -> dict[str, Any]:
        return _change_call(changes.approve, change_id, user.username)

    @r.post("/changes/{change_id}/reject")
    def reject_change(change_id: str, user: Admin, body: Annotated[dict[str, Any], Body()] | None = None
                      ) -> dict[str, Any]:
        return _change_call(changes.reject, change_id, user.username, str((body or {}).get("reason", "") or ""))

    @r.post("/changes/{change_id}/cancel")
    def cancel_change(change_id: str, user: Analyst, body: Annotated[dict[str, Any], Body()] | None = None
                      ) -> dict[str, Any]:
        return _change_call(changes.cancel, change_id, user.username, str((body or {}).get("reason", "") or ""),
                            role_allows(user.role, "admin"))

    @r.get("/changes")
    def list_changes(s: Db, _: Viewer, status: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> list[dict[str, Any]]:
        try:
            rows = changes.list_changes(s, status, limit)
        except UsageError as exc:
            raise HTTPException(422, str(exc)) from exc
        return [changes.change_json(c) for c in rows]

    @r.get("/changes/{change_id}")
    def get_change(change_id: str, s: Db, _: Viewer,
                   records: Annotated[int, Query(ge=0, le=10000)] = 1000) -> dict[str, Any]:
        """One change with its change records (the expected file changes linked to it)."""
        c = s.get(Change, change_id)
        if c is None:
            raise HTTPException(404, f"no change {change_id!r}")
        return changes.change_json(c, s, records)

    @r.post("/sweeps")
    def run_sweep(user: Analyst, body: Annotated[dict[str, Any], Body()] | None = None) -> dict[str, Any]:
        body = body or {}
        if channel is None or channel.loop is None:
            raise HTTPException(503, "the agent channel is not running")
        checks = [str(c) for c in body.get("checks", [])]
        agents = body.get("agents")
        sid = uuid.uuid4().hex[:12]
        fut = asyncio.run_coroutine_threadsafe(_call(channel.run_checks, agents, checks), channel.loop)
        sent = fut.result(timeout=10)
        sweeps[sid] = {"id": sid, "requested_by": user.username, "requested_at": rfc3339(dt.datetime.now(dt.UTC)),
                       "checks": checks, "agents": sent, "status": "sent"}
        with ctl.sessions.begin() as s:
            audit.record(s, user.username, "sweep.run", "sweep", sid, {"agents": sent, "checks": checks})
        return sweeps[sid]

    @r.get("/sweeps/{sweep_id}")
    def get_sweep(sweep_id: str, _: Viewer) -> dict[str, Any]:
        if sweep_id not in sweeps:
            raise HTTPException(404, f"no sweep {sweep_id!r}")
        return sweeps[sweep_id]

    @r.get("/audit/verify")
    def audit_verify(s: Db, _: Viewer) -> dict[str, Any]:
        res = audit.verify(s)
        return {"ok": res.ok, "entries": res.entries, "first_bad_seq": res.first_bad_seq, "reason": res.reason,
                "head": res.head}

    eol.register_routes(r, ctl, need)
    app.include_router(r)

    @app.get("/", include_in_schema=False)
    def root() -> PlainTextResponse:
        return PlainTextResponse(
            f"Vigil controller {__version__}\nREST API: /api/v1 (OpenAPI: /api/v1/openapi.json, docs: /api/v1/docs)\n"
        )

    return app


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


async def _in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))
