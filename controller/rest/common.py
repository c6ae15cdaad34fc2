"""What every REST resource module shares: the error body, the declared error statuses, the database and
the caller's identity as FastAPI dependencies.

The Controller is read from ``request.app.state.vigil`` (set by :func:`controller.rest.app.create_app`), so the
resource modules declare their routes at import time and stay plain modules with one router each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from controller.core import Controller
from controller.domain.users import audit_rejected_key, check_api_key, role_allows
from controller.storage.models import MAX_ID, User
from controller.storage.store import unwritable_reason

# Every integer a route takes from its path or query is one of the types below, so that an out-of-range
# value is a 422 naming the parameter, never a database error (tests/controller/test_limits.py walks them).
MAX_LIMIT = 10_000
Id = Annotated[int, Path(ge=1, le=MAX_ID, description=f"1..{MAX_ID}")]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID, description=f"an id, 1..{MAX_ID}")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"at most this many, 1..{MAX_LIMIT}")]
Count = Annotated[int, Query(ge=0, le=MAX_LIMIT, description=f"this many, 0..{MAX_LIMIT}")]


class ValidationIssue(BaseModel):
    """One problem FastAPI found in the request (its standard 422 detail items)."""

    model_config = ConfigDict(extra="allow")
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """One thing wrong with an uploaded document: where (file and line, or a path inside it) and why."""

    file: str | None = None
    line: int | None = None
    field: str | None = None
    where: str | None = None
    reason: str


class ErrorBody(BaseModel):
    """Every refusal: ``detail`` says what is wrong and where; a rejected document also lists ``problems``."""

    detail: str | list[ValidationIssue]
    problems: list[Problem] | None = Field(default=None, description="only when an uploaded document is rejected")


_MEANING = {
    400: "the request is malformed",
    401: "no API key, or an invalid or revoked one",
    403: "the caller's role does not allow this",
    404: "no such object",
    409: "the object's state does not allow this (illegal transition, stale version, duplicate)",
    413: "the request body is too large",
    422: "the input is wrong: the detail names the field and the reason",
    503: "a part of the controller this needs is not running, or its database cannot be written (disk full, "
         "read-only): the detail says which; nothing was changed, retry later",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each status it can refuse with, all with the one error body.
    Every route that needs an API key also answers 401 and 403, and every route validates its input (422)."""
    return {code: {"model": ErrorBody, "description": _MEANING[code]} for code in sorted({*codes, 422})}


AUTH = (401, 403)

# Seconds a client is asked to wait before retrying a write the store refused.
STORE_RETRY_AFTER_S = 30


async def store_unwritable(request: Request, exc: Exception) -> Response:
    """A database error because the store cannot be written (disk full, read-only, I/O error) is a 503 with
    one clear message, never a bare 500: the REST error body under /api, the web UI's error page (which the
    web UI registers as ``app.state.store_unavailable_page``) elsewhere. Any other database error is a bug
    and stays one."""
    reason = unwritable_reason(exc)
    if reason is None:
        raise exc
    page = getattr(request.app.state, "store_unavailable_page", None)
    if page is not None and not request.url.path.startswith("/api/"):
        response = page(request, reason)
        assert isinstance(response, Response)
        return response
    return JSONResponse({"detail": reason}, status_code=503, headers={"Retry-After": str(STORE_RETRY_AFTER_S)})


def controller(request: Request) -> Controller:
    ctl = request.app.state.vigil
    assert isinstance(ctl, Controller)
    return ctl


Ctl = Annotated[Controller, Depends(controller)]


def _db(ctl: Ctl) -> Iterator[Session]:
    with ctl.sessions() as s:
        yield s


Db = Annotated[Session, Depends(_db)]


# Declares the scheme in the OpenAPI document; the checks (and their messages) are ours.
_bearer = HTTPBearer(auto_error=False, description="an API key: `vigil-controller apikey create`")


def current_user(s: Db, ctl: Ctl, request: Request,
                 creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> User:
    """The key's user. A revoked key, a wrong secret and a locked or disabled user get the one answer of an
    unknown key; each refusal of a known key is audited (``apikey.rejected``)."""
    if creds is None or not creds.credentials.strip():
        raise HTTPException(401, "missing 'Authorization: Bearer <api key>' header",
                            headers={"WWW-Authenticate": "Bearer"})
    user, row, reason = check_api_key(s, creds.credentials.strip())
    if user is None:
        if row is not None:
            with ctl.sessions.begin() as w:
                audit_rejected_key(w, row, reason, request.client.host if request.client else "")
        raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    return user


def need(role: str) -> Callable[..., User]:
    """A dependency giving the caller if their role allows ``role`` (viewer < analyst < admin), else 403."""

    def dep(user: Annotated[User, Depends(current_user)]) -> User:
        if not role_allows(user.role, role):
            raise HTTPException(403, f"this needs the {role} role; {user.username} is {user.role}")
        return user

    return dep


Viewer = Annotated[User, Depends(need("viewer"))]
Analyst = Annotated[User, Depends(need("analyst"))]
Admin = Annotated[User, Depends(need("admin"))]


class Reason(BaseModel):
    """An optional reason, recorded in the audit log."""

    reason: str | None = ""
