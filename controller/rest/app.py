"""The REST API under /api/v1 (SPEC section 3). JSON in and out, ``Authorization: Bearer <api key>``."""


import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common import __version__
from common.errors import UsageError
from controller import web
from controller.baselines import BaselineError
from controller.core import Controller
from controller.domain import audit, changes, exceptions, tickets, workflow
from controller.domain.users import role_allows, user_for_api_key
from controller.errors import Conflict, Forbidden, NotFound, http_status
from controller.rest import eol
from controller.rest import notifications as notify_api
from controller.rpc.service import AgentChannelService
from controller.storage.models import Agent, Baseline, Change, Delivery, Finding, Result, Ticket, User
from controller.storage.serialize import agent_json, finding_json, rfc3339, ticket_json


@contextlib.contextmanager
def http_errors() -> Iterator[None]:
    """Map the controller's errors to HTTP status codes, with their message as the detail."""
    try:
        yield
    except (UsageError, Forbidden, NotFound, Conflict) as exc:
        raise HTTPException(http_status(exc), str(exc)) from exc


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
        pending = Gauge("vigil_notifications_pending", "Notification deliveries not yet delivered", ["target"],
                        registry=reg)
        for target, n in s.execute(select(Delivery.target, func.count()).where(Delivery.status == "pending")
                                   .group_by(Delivery.target)):
            pending.labels(target).set(n)
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
        from controller.domain.enrollment import revoke
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
        """One ticket with its timeline, report stages, covering exception and false-positive hint."""
        with http_errors():
            return workflow.ticket_detail(s, workflow.get_ticket(s, ticket_id))

    def _ticket_call(fn: Callable[..., Any], ticket_id: int, *args: Any, **kwargs: Any) -> dict[str, Any]:
        with ctl.sessions.begin() as s, http_errors():
            fn(s, ticket_id, *args, **kwargs)
            return workflow.ticket_detail(s, workflow.get_ticket(s, ticket_id))

    @r.post("/tickets/{ticket_id}/transition")
    def transition(ticket_id: int, user: Viewer, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        """``{"to": STATE, "reason": TEXT}``; marking ``false_positive`` needs a reason and may carry
        ``"exception": {"owner": USER, "expires": RFC3339, "reason": TEXT, "assets": [...], "subject": GLOB}``."""
        with http_errors():
            exception = workflow.ExceptionRequest.from_json(body.get("exception"))
        return _ticket_call(workflow.transition, ticket_id, str(body.get("to", "")), user,
                            str(body.get("reason", "") or ""), exception)

    @r.post("/tickets/{ticket_id}/assign")
    def assign(ticket_id: int, user: Viewer, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        """``{"assignee": USER}``; null or "" unassigns."""
        return _ticket_call(workflow.assign, ticket_id, body.get("assignee"), user)

    @r.post("/tickets/{ticket_id}/reports", status_code=201)
    def file_report(ticket_id: int, user: Viewer, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        """``{"stage": "initial|formal|closure", "text": TEXT}`` (TPEx-CPA 3(12)2)."""
        return _ticket_call(workflow.file_report, ticket_id, str(body.get("stage", "")), body.get("text"), user)

    @r.post("/tickets/{ticket_id}/comments")
    def comment(ticket_id: int, user: Viewer, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        with ctl.sessions.begin() as s, http_errors():
            event = workflow.comment(s, ticket_id, str(body.get("text") or ""), user)
            return {"ticket": ticket_id, "at": rfc3339(event.at), "actor": event.actor, "text": event.text}

    # -- exceptions (accepted risk with owner, reason, expiry) -----------------------------------
    @r.get("/exceptions")
    def list_exceptions(s: Db, _: Viewer, state: str | None = None) -> list[dict[str, Any]]:
        with http_errors():
            return exceptions.list_json(s, exceptions.list_exceptions(s, state))

    @r.post("/exceptions", status_code=201)
    def create_exception(user: Analyst, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        """``{"rule_id", "assets": [...], "subject": GLOB, "owner": USER, "reason": TEXT, "expires": RFC3339}``."""
        with ctl.sessions.begin() as s, http_errors():
            e = exceptions.create(s, user.username, body.get("rule_id"), body.get("assets"), body.get("subject"),
                                  body.get("owner"), body.get("reason"), body.get("expires"))
            return exceptions.exception_json(e, s)

    @r.get("/exceptions/{exception_id}")
    def get_exception(exception_id: str, s: Db, _: Viewer) -> dict[str, Any]:
        with http_errors():
            return exceptions.exception_json(exceptions.get(s, exception_id), s)

    @r.post("/exceptions/{exception_id}/revoke")
    def revoke_exception(exception_id: str, user: Analyst, body: Annotated[dict[str, Any], Body()] | None = None
                         ) -> dict[str, Any]:
        with ctl.sessions.begin() as s, http_errors():
            e = exceptions.revoke(s, exception_id, user, str((body or {}).get("reason", "") or ""))
            out = exceptions.exception_json(e, s)
            tickets.release_lapsed_exceptions(s)
            return out

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
        from controller.baselines import MAX_BYTES, Problem, decode_baseline, too_large

        filename = request.headers.get("x-vigil-filename", f"{name}.yaml")

        def refused(exc: BaselineError, status: int = 422) -> JSONResponse:
            return JSONResponse({"detail": str(exc), "problems": [
                {"file": filename, "line": ln, "field": fld, "reason": why} for ln, fld, why in exc.problems
            ]}, status_code=status)

        # An oversized body is refused before it is read: by the length it declares, then as it arrives.
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BYTES:
            return refused(BaselineError(filename, [Problem(0, "", too_large(int(declared)))]), 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BYTES:
                return refused(BaselineError(filename, [Problem(0, "", too_large(None))]), 413)
        raw: str | bytes = bytes(body)
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                raw = str(json.loads(decode_baseline(raw, filename))["yaml"])
            except BaselineError as exc:
                return refused(exc)
            except (ValueError, KeyError, TypeError, RecursionError):
                raise HTTPException(422, 'JSON body must be {"yaml": "<baseline text>"}') from None
        try:
            doc = await _in_thread(ctl.apply_baseline, raw, filename, user.username, expect_name=name)
        except BaselineError as exc:
            return refused(exc)
        except Conflict as exc:
            raise HTTPException(409, str(exc)) from exc
        except UsageError as exc:
            raise HTTPException(422, str(exc)) from exc
        return JSONResponse({"name": doc.name, "version": doc.version, "rules": [x.id for x in doc.rules]})

    # -- approved changes (TPEx-CPA 3(7)1): analysts request, a different admin approves ----------
    def _change_call(fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
        with ctl.sessions.begin() as s, http_errors():
            return changes.change_json(fn(s, *args))

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
    notify_api.register_routes(r, ctl, need)
    app.include_router(r)

    web.register(app, ctl, channel)
    return app


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


async def _in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))
