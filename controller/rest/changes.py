"""Approved changes (TPEx-CPA 3(7)1): analysts request a window, a different admin approves it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from controller.core import Controller
from controller.domain import changes
from controller.domain.users import role_allows
from controller.errors import NotFound
from controller.rest.common import AUTH, Admin, Analyst, Count, Ctl, Db, Limit, Reason, Viewer, errors
from controller.storage.models import Change

router = APIRouter(tags=["changes"])


class Window(BaseModel):
    start: str
    end: str


class ChangeRecordOut(BaseModel):
    id: int
    change_id: str | None
    expected_source: str
    asset: str
    rule_id: str
    path: str
    old_path: str
    kind: str
    at: str
    detected_at: str | None
    recorded_at: str
    result_id: int | None
    sha256_before: str
    sha256_after: str
    evidence: dict[str, Any]


class ChangeOut(BaseModel):
    id: str
    status: str  # changes.STATUSES
    requested_by: str
    requested_at: str
    reason: str
    assets: list[str]
    paths: list[str]
    start: str
    end: str
    approved_by: str | None
    approved_at: str | None
    closed_by: str | None
    closed_at: str | None
    close_reason: str
    effective: Window | None = Field(description="what the change really covers: from approval to the end")


class ChangeDetail(ChangeOut):
    record_count: int
    records: list[ChangeRecordOut] = Field(default_factory=list)


class ChangeIn(BaseModel):
    assets: list[str] | str = Field(description="agent ids, hostnames or tag:NAME (a comma-separated string too)")
    paths: list[str] | str = Field(description="path globs (a comma-separated string too)")
    start: str = Field(description="RFC 3339")
    end: str = Field(description="RFC 3339")
    reason: str


def _work(ctl: Controller, fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    with ctl.sessions.begin() as s:
        return changes.change_json(fn(s, *args))


@router.post("/changes", status_code=201, response_model=ChangeOut, responses=errors(*AUTH, 400))
def create_change(body: ChangeIn, user: Analyst, ctl: Ctl) -> dict[str, Any]:
    return _work(ctl, changes.create, user.username, body.assets, body.paths, body.start, body.end, body.reason)


@router.post("/changes/{change_id}/approve", response_model=ChangeOut, responses=errors(*AUTH, 404, 409))
def approve_change(change_id: str, user: Admin, ctl: Ctl) -> dict[str, Any]:
    return _work(ctl, changes.approve, change_id, user.username)


@router.post("/changes/{change_id}/reject", response_model=ChangeOut, responses=errors(*AUTH, 400, 404, 409))
def reject_change(change_id: str, user: Admin, ctl: Ctl, body: Reason | None = None) -> dict[str, Any]:
    return _work(ctl, changes.reject, change_id, user.username, (body.reason if body else "") or "")


@router.post("/changes/{change_id}/cancel", response_model=ChangeOut, responses=errors(*AUTH, 400, 404, 409))
def cancel_change(change_id: str, user: Analyst, ctl: Ctl, body: Reason | None = None) -> dict[str, Any]:
    return _work(ctl, changes.cancel, change_id, user.username, (body.reason if body else "") or "",
                 role_allows(user.role, "admin"))


@router.get("/changes", response_model=list[ChangeOut], responses=errors(*AUTH))
def list_changes(s: Db, _: Viewer,
                 status: Annotated[str | None, Query(description="comma-separated: " + ", ".join(changes.STATUSES))
                                   ] = None,
                 limit: Limit = 1000) -> list[dict[str, Any]]:
    return [changes.change_json(c) for c in changes.list_changes(s, status, limit)]


@router.get("/changes/{change_id}", response_model=ChangeDetail, responses=errors(*AUTH, 404))
def get_change(change_id: str, s: Db, _: Viewer,
               records: Count = 1000) -> dict[str, Any]:
    """One change with its change records (the expected file changes linked to it)."""
    c = s.get(Change, change_id)
    if c is None:
        raise NotFound(f"no change {change_id!r}")
    return changes.change_json(c, s, records)
