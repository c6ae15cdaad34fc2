"""Tickets and their workflow: list, show, transition, assign, file a report stage, comment.

The rules (roles, states, reasons, the exception offered with a false positive) are
:mod:`controller.domain.workflow`'s; this module only types the doors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict
from sqlalchemy import select

from common.errors import UsageError
from controller import vocabulary
from controller.core import Controller
from controller.domain import workflow
from controller.rest.common import AUTH, Ctl, Db, Id, Limit, Viewer, errors
from controller.rest.exceptions import RiskExceptionOut
from controller.storage.models import Agent, Ticket
from controller.storage.serialize import rfc3339, ticket_json

router = APIRouter(tags=["tickets"])


class TicketOut(BaseModel):
    id: int
    title: str
    severity: vocabulary.Severity
    status: str  # vocabulary.TICKET_STATUSES
    asset: str
    asset_name: str | None
    check: str
    rule_id: str
    subject: str
    refs: list[str]
    baseline: str
    baseline_version: int
    first_seen: str
    last_seen: str
    occurrences: int
    initial_report_due: str | None
    resolved_at: str | None
    resolution: str
    assignee: str | None
    evidence: dict[str, Any]
    fingerprint: str = Field(description="our dedupe key; external trackers keep it")
    exception_id: str | None
    reopened: int


class TicketEventOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    at: str
    actor: str
    kind: str
    from_: str | None = Field(alias="from")
    to: str | None
    text: str


class TicketReportOut(BaseModel):
    stage: str
    filed_by: str
    filed_at: str
    text: str


class TicketDetail(TicketOut):
    timeline: list[TicketEventOut]
    reports: list[TicketReportOut]
    next_report: str | None
    allowed_transitions: list[str]
    exception: RiskExceptionOut | None
    baseline_change_hint: str | None


class ExceptionOffer(BaseModel):
    """Accepted risk for the ticket's rule on its asset (or ``assets``) and subject (or ``subject``, a glob)."""

    owner: str = ""
    expires: str = Field(default="", description="RFC 3339")
    reason: str | None = ""
    assets: list[str] | str | None = None
    subject: str | None = None


# The domain checks these (its messages name the field); the schema says them too, so that clients and
# generated requests know the accepted values.
_NOT_BLANK: JsonDict = {"pattern": r"\S"}


class TransitionIn(BaseModel):
    to: str = Field(description="the new state; see allowed_transitions",
                    json_schema_extra={"enum": list(vocabulary.TICKET_STATUSES)})
    reason: str | None = Field(default="", description="required for false_positive")
    exception: ExceptionOffer | None = None


class AssignIn(BaseModel):
    assignee: str | None = Field(default=None, description='null or "" unassigns')


class ReportIn(BaseModel):
    stage: str = Field(description="initial, formal or closure (TPEx-CPA 3(12)2)",
                       json_schema_extra={"enum": list(workflow.REPORT_STAGES)})
    text: str = Field(json_schema_extra=_NOT_BLANK)


class CommentIn(BaseModel):
    text: str = Field(json_schema_extra=_NOT_BLANK)


class CommentOut(BaseModel):
    ticket: int
    at: str
    actor: str
    text: str


def _split(value: str | None, allowed: tuple[str, ...], name: str) -> list[str]:
    wanted = [v for v in (value or "").split(",") if v]
    bad = [v for v in wanted if v not in allowed]
    if bad:
        raise UsageError(f"{name}: {', '.join(bad)} is not one of {', '.join(allowed)}")
    return wanted


@router.get("/tickets", response_model=list[TicketOut], responses=errors(*AUTH))
def list_tickets(
    s: Db, _: Viewer,
    status: Annotated[str | None, Query(description="comma-separated ticket statuses")] = None,
    severity: Annotated[str | None, Query(description="comma-separated severities")] = None,
    check: Annotated[str | None, Query(max_length=32)] = None,
    limit: Limit = 1000,
) -> list[dict[str, Any]]:
    q = select(Ticket)
    if statuses := _split(status, vocabulary.TICKET_STATUSES, "status"):
        q = q.where(Ticket.status.in_(statuses))
    if severities := _split(severity, vocabulary.SEVERITIES, "severity"):
        q = q.where(Ticket.severity.in_(severities))
    if check:
        q = q.where(Ticket.check_id == check)
    names = {aid: h for aid, h in s.execute(select(Agent.id, Agent.hostname))}
    return [ticket_json(t, names.get(t.asset)) for t in s.execute(q.order_by(Ticket.last_seen.desc()).limit(limit))
            .scalars()]


@router.get("/tickets/{ticket_id}", response_model=TicketDetail, responses=errors(*AUTH, 404))
def get_ticket(ticket_id: Id, s: Db, _: Viewer) -> dict[str, Any]:
    """One ticket with its timeline, report stages, covering exception and false-positive hint."""
    return workflow.ticket_detail(s, workflow.get_ticket(s, ticket_id))


def _work(ctl: Controller, ticket_id: int, fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    with ctl.sessions.begin() as s:
        fn(s, ticket_id, *args)
        return workflow.ticket_detail(s, workflow.get_ticket(s, ticket_id))


@router.post("/tickets/{ticket_id}/transition", response_model=TicketDetail, responses=errors(*AUTH, 400, 404, 409))
def transition(ticket_id: Id, body: TransitionIn, user: Viewer, ctl: Ctl) -> dict[str, Any]:
    """An illegal transition is 409, a missing permission 403; ``false_positive`` needs a reason and may
    carry an exception (accepted risk) for the ticket's rule."""
    offer = workflow.ExceptionRequest.from_json(body.exception.model_dump() if body.exception else None)
    return _work(ctl, ticket_id, workflow.transition, body.to, user, body.reason or "", offer)


@router.post("/tickets/{ticket_id}/assign", response_model=TicketDetail, responses=errors(*AUTH, 400, 404, 409))
def assign(ticket_id: Id, body: AssignIn, user: Viewer, ctl: Ctl) -> dict[str, Any]:
    return _work(ctl, ticket_id, workflow.assign, body.assignee, user)


@router.post("/tickets/{ticket_id}/reports", status_code=201, response_model=TicketDetail,
             responses=errors(*AUTH, 400, 404, 409))
def file_report(ticket_id: Id, body: ReportIn, user: Viewer, ctl: Ctl) -> dict[str, Any]:
    return _work(ctl, ticket_id, workflow.file_report, body.stage, body.text, user)


@router.post("/tickets/{ticket_id}/comments", response_model=CommentOut, responses=errors(*AUTH, 400, 404, 409))
def comment(ticket_id: Id, body: CommentIn, user: Viewer, ctl: Ctl) -> CommentOut:
    with ctl.sessions.begin() as s:
        event = workflow.comment(s, ticket_id, body.text, user)
        return CommentOut(ticket=ticket_id, at=rfc3339(event.at) or "", actor=event.actor, text=event.text)

