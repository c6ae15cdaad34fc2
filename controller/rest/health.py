"""``GET /healthz`` (no key: load balancers ask it) and ``GET /metrics`` (Prometheus text, no key)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from pydantic import BaseModel
from sqlalchemy import func, select

from common import __version__
from controller.rest.common import Ctl, Db
from controller.storage.models import Agent, Delivery, Result, Ticket

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    version: str


@router.get("/healthz", response_model=Health)
def healthz(s: Db) -> Health:
    s.execute(select(1))
    return Health(status="ok", version=__version__)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}})
def metrics(s: Db, ctl: Ctl) -> Response:
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
    streams.set(ctl.agent_streams())
    return Response(generate_latest(reg), media_type=CONTENT_TYPE_LATEST)
