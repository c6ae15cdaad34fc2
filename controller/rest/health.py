"""``GET /healthz`` (no key: load balancers ask it) and ``GET /metrics`` (Prometheus text, no key)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from common import __version__
from controller.core import Controller
from controller.rest.common import Ctl, Db
from controller.storage.models import Agent, Delivery, Lock, Result, Ticket
from controller.storage.store import unwritable_reason

router = APIRouter(tags=["health"])

# Below this much free space on the data directory's file system, a SQLite store is reported as not
# writable: SQLite needs room for its WAL and a checkpoint, and a full disk refuses every result.
MIN_FREE_BYTES = 64 * 2**20
# The row of the `locks` table the write probe upserts (no lease uses this name).
PROBE_LOCK = "healthz-write-probe"


class Health(BaseModel):
    status: str = Field(description="`ok`, or `unavailable` with `detail` saying what is wrong")
    version: str
    detail: str | None = Field(default=None, description="why the controller is not healthy")
    free_bytes: int | None = Field(default=None, description="free space on the data directory's file system")


def _probe(s: Session) -> None:
    """A real write: upsert and commit one row, so a full disk or a read-only database shows here."""
    values = {"name": PROBE_LOCK, "holder": f"{socket.gethostname()}:{os.getpid()}"[:128],
              "expires_at": dt.datetime.now(dt.UTC)}
    insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(Lock).values(**values)
    s.execute(stmt.on_conflict_do_update(index_elements=[Lock.name],
                                         set_={"holder": values["holder"], "expires_at": values["expires_at"]}))
    s.commit()


def _problem(s: Session, ctl: Controller, free: int | None) -> str | None:
    try:
        _probe(s)
    except DBAPIError as exc:
        s.rollback()
        return unwritable_reason(exc) or f"the controller's database refused a write: {str(exc.orig).strip()}"
    if ctl.is_sqlite and free is not None and free < MIN_FREE_BYTES:
        return (f"only {free // 2**20} MiB free on the file system of {ctl.config.data_dir} (at least "
                f"{MIN_FREE_BYTES // 2**20} MiB needed): results would soon be refused; free space there")
    return None


@router.get("/healthz", response_model=Health, responses={
    503: {"model": Health, "description": "the store cannot be written (disk full, read-only): `detail` says why"}})
def healthz(s: Db, ctl: Ctl) -> Health | JSONResponse:
    try:
        free: int | None = shutil.disk_usage(ctl.config.data_dir).free
    except OSError:
        free = None
    problem = _problem(s, ctl, free)
    if problem is not None:
        body = Health(status="unavailable", version=__version__, detail=problem, free_bytes=free)
        return JSONResponse(body.model_dump(), status_code=503)
    return Health(status="ok", version=__version__, free_bytes=free)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}})
def metrics(s: Db, ctl: Ctl) -> Response:
    reg = CollectorRegistry()
    agents = Gauge("vigil_agents", "Agents by status", ["status"], registry=reg)
    shown = case((Agent.revoked_at.is_not(None), "revoked"), else_=Agent.status)  # a revocation always wins
    for status, n in s.execute(select(shown, func.count()).group_by(shown)):
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
    streams.set(ctl.agent_streams())
    return Response(generate_latest(reg), media_type=CONTENT_TYPE_LATEST)
