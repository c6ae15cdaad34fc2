"""Exceptions (accepted risk with an owner, a reason and an expiry): list, create, show, revoke."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from controller.domain import exceptions, tickets
from controller.rest.common import AUTH, Analyst, Ctl, Db, Reason, Viewer, errors

router = APIRouter(tags=["exceptions"])


class RiskExceptionOut(BaseModel):
    id: str
    rule_id: str
    assets: list[str]
    subject: str
    owner: str
    reason: str
    created_by: str
    created_at: str
    expires_at: str
    ticket_id: int | None
    state: Literal["active", "expired", "revoked"]
    revoked_by: str | None
    revoked_at: str | None
    revoke_reason: str
    covered_findings: int | None = Field(default=None, description="how many findings it covers now")


class ExceptionIn(BaseModel):
    rule_id: str
    assets: list[str] | str = Field(description="agent ids, hostnames, tag:NAME, or '*'")
    subject: str | None = Field(default=None, description="a glob; all subjects when absent")
    owner: str = Field(description="the Vigil user who answers for the risk")
    reason: str
    expires: str = Field(description="RFC 3339, in the future")


@router.get("/exceptions", response_model=list[RiskExceptionOut], responses=errors(*AUTH))
def list_exceptions(s: Db, _: Viewer,
                    state: Annotated[Literal["active", "expired", "revoked"] | None, Query()] = None
                    ) -> list[dict[str, Any]]:
    return exceptions.list_json(s, exceptions.list_exceptions(s, state))


@router.post("/exceptions", status_code=201, response_model=RiskExceptionOut, responses=errors(*AUTH, 400))
def create_exception(body: ExceptionIn, user: Analyst, ctl: Ctl) -> dict[str, Any]:
    with ctl.sessions.begin() as s:
        e = exceptions.create(s, user.username, body.rule_id, body.assets, body.subject, body.owner, body.reason,
                              body.expires)
        return exceptions.exception_json(e, s)


@router.get("/exceptions/{exception_id}", response_model=RiskExceptionOut, responses=errors(*AUTH, 404))
def get_exception(exception_id: str, s: Db, _: Viewer) -> dict[str, Any]:
    return exceptions.exception_json(exceptions.get(s, exception_id), s)


@router.post("/exceptions/{exception_id}/revoke", response_model=RiskExceptionOut,
             responses=errors(*AUTH, 400, 404, 409))
def revoke_exception(exception_id: str, user: Analyst, ctl: Ctl, body: Reason | None = None) -> dict[str, Any]:
    with ctl.sessions.begin() as s:
        e = exceptions.revoke(s, exception_id, user, (body.reason if body else "") or "")
        out = exceptions.exception_json(e, s)
        tickets.release_lapsed_exceptions(s)
        return out
