"""What every REST resource module shares: the error body, the declared error statuses, the database and
the caller's identity as FastAPI dependencies.

The Controller is read from ``request.app.state.vigil`` (set by :func:`controller.rest.app.create_app`), so the
resource modules declare their routes at import time and stay plain modules with one router each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from controller.core import Controller
from controller.domain.users import role_allows, user_for_api_key
from controller.storage.models import User

# The widest integer the databases store: larger ids cannot name a row (and would overflow the driver).
MAX_ID = 2**63 - 1
Id = Annotated[int, Path(ge=1, le=MAX_ID)]


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
    503: "a part of the controller this needs is not running",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each status it can refuse with, all with the one error body.
    Every route that needs an API key also answers 401 and 403, and every route validates its input (422)."""
    return {code: {"model": ErrorBody, "description": _MEANING[code]} for code in sorted({*codes, 422})}


AUTH = (401, 403)


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


def current_user(s: Db, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> User:
    if creds is None or not creds.credentials.strip():
        raise HTTPException(401, "missing 'Authorization: Bearer <api key>' header",
                            headers={"WWW-Authenticate": "Bearer"})
    user = user_for_api_key(s, creds.credentials.strip())
    if user is None:
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
