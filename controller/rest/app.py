"""The REST API under /api/v1 (SPEC section 3): JSON in and out, ``Authorization: Bearer <api key>``.

This module only composes: one router per resource (the modules beside it), the authentication
dependencies (:mod:`controller.rest.common`) and one set of exception handlers that turns the domain's
refusals into ``{"detail": ...}`` with the status the OpenAPI document declares. The web UI is not mounted
here: the composition root (:mod:`controller.server`) adds it to the same app.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from common import __version__
from common.errors import UsageError
from controller.baselines import BaselineError
from controller.core import Controller
from controller.errors import ControllerError, http_status
from controller.rest import (
    agents,
    audit,
    baselines,
    changes,
    devices,
    eol,
    exceptions,
    findings,
    health,
    notifications,
    sweeps,
    tickets,
    users,
)
from controller.rest.common import AUTH, errors, need, store_unwritable

PREFIX = "/api/v1"
_RESOURCES = (health, agents, devices, findings, tickets, exceptions, baselines, changes, sweeps, audit, users)


def create_app(ctl: Controller) -> FastAPI:
    """The FastAPI app serving /api/v1 on ``ctl``; its OpenAPI document is at /api/v1/openapi.json."""
    app = FastAPI(
        title="Vigil controller",
        version=__version__,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
    )
    app.state.vigil = ctl
    api = APIRouter(prefix=PREFIX)
    for module in _RESOURCES:
        api.include_router(module.router)
    # The EOL routes declare their own refusals (bodies of the same {"detail": ...} shape); these are the
    # ones every key-protected route can give, for where they do not.
    eol_api = APIRouter(responses=errors(*AUTH))
    eol.register_routes(eol_api, ctl, need)
    api.include_router(eol_api)
    notifications.register_routes(api, ctl, need)
    app.include_router(api)
    install_error_handlers(app)
    return app


def install_error_handlers(app: FastAPI) -> None:
    """Refusals from the domain become ``{"detail": MESSAGE}`` with their status (controller.errors.http_status):
    wrong input 422, a role that does not allow it 403, no such object 404, a state that forbids it 409, a part
    that is not running or a database that cannot be written 503. Validation errors keep FastAPI's list of
    ``{loc, msg, type}``, each ``msg`` starting with where the problem is (``body.to: Field required``)."""

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=http_status(exc))

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"detail": [_named(e) for e in jsonable_encoder(exc.errors())]}, status_code=422)

    async def http_refusal(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 405:
            # Starlette names only the methods of the first route that matched the path; a path served by
            # several routes (GET and PUT /baselines/{name}) allows them all.
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(_allowed(request.app, request.scope))}
        return await http_exception_handler(request, exc)

    for kind in (UsageError, BaselineError, ControllerError):
        app.add_exception_handler(kind, refused)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_refusal)
    # Disk full or a read-only database: 503 and one message (controller.rest.common.store_unwritable).
    app.add_exception_handler(DBAPIError, store_unwritable)


def _allowed(app: FastAPI, scope: Scope) -> list[str]:
    probes = ({**scope, "method": m} for m in ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"))
    return [p["method"] for p in probes if any(r.matches(p)[0] == Match.FULL for r in app.router.routes)]


def _named(issue: dict[str, Any]) -> dict[str, Any]:
    """A validation issue whose message names where it is (``query.limit: ...``), for clients that show only
    the messages."""
    where = ".".join(str(part) for part in issue.get("loc", ()))
    return {**issue, "msg": f"{where}: {issue.get('msg', '')}" if where else issue.get("msg", "")}
