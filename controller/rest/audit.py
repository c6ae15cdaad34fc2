"""``GET /audit/verify``: walk the audit log's hash chain end to end."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from controller.domain import audit
from controller.rest.common import AUTH, Db, Viewer, errors

router = APIRouter(tags=["audit"])


class AuditVerification(BaseModel):
    ok: bool
    entries: int
    first_bad_seq: int | None
    reason: str
    head: str


@router.get("/audit/verify", response_model=AuditVerification, responses=errors(*AUTH))
def audit_verify(s: Db, _: Viewer) -> AuditVerification:
    res = audit.verify(s)
    return AuditVerification(ok=res.ok, entries=res.entries, first_bad_seq=res.first_bad_seq, reason=res.reason,
                             head=res.head)
