"""``GET /findings``: the latest verdict per (asset, rule, subject)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from controller import vocabulary
from controller.rest.common import AUTH, Db, Limit, Viewer, errors
from controller.storage.models import Finding
from controller.storage.serialize import finding_json

router = APIRouter(tags=["findings"])


class FindingOut(BaseModel):
    id: int
    asset: str
    rule_id: str
    check: str
    subject: str
    status: str  # a verdict: vocabulary.VERDICTS
    severity: vocabulary.Severity
    baseline: str
    baseline_version: int
    refs: list[str]
    message: str
    evidence: dict[str, Any]
    first_seen: str
    last_seen: str
    result_id: int | None
    exception_id: str | None


@router.get("/findings", response_model=list[FindingOut], responses=errors(*AUTH))
def list_findings(
    s: Db, _: Viewer,
    status: Annotated[vocabulary.Verdict | None, Query(description="pass, fail or unknown")] = None,
    check: Annotated[str | None, Query(max_length=32)] = None,
    asset: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 1000,
) -> list[dict[str, Any]]:
    q = select(Finding)
    if status:
        q = q.where(Finding.status == status)
    if check:
        q = q.where(Finding.check_id == check)
    if asset:
        q = q.where(Finding.asset == asset)
    return [finding_json(f) for f in s.execute(q.order_by(Finding.last_seen.desc()).limit(limit)).scalars()]
