"""The security staff's web UI: server-rendered pages (Jinja2) on the controller's HTTP port.

Public: ``register(app, ctl)`` (called by the composition root, controller/server.py) mounts the pages under
``/`` and the static files under ``/static``;
``stats.take_snapshot`` records the fleet's state for the dashboard's trends. Modules: ``auth`` (browser
sessions, CSRF), ``login`` (sign-in, TOTP, logout), ``pages`` (everything else), ``charts`` (inline SVG).
The login and role rules live in :mod:`controller.domain.users` and :mod:`controller.domain.workflow`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from controller.core import Controller
from controller.web import filters, login, pages

__all__ = ["register"]

_HERE = Path(__file__).parent


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    filters.install(templates.env)
    return templates


def register(app: FastAPI, ctl: Controller) -> None:
    app.state.vigil_web = pages.WebState(ctl=ctl, templates=_templates(),
                                         clock=lambda: dt.datetime.now(dt.UTC))

    async def on_redirect(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, pages.Redirect)
        return pages.redirect(exc.url)

    async def on_refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, pages.Refused)
        return pages.refused_page(request, exc)

    # The app's handler for a database that cannot be written renders this page outside /api.
    app.state.store_unavailable_page = pages.store_unavailable_page
    app.add_exception_handler(pages.Redirect, on_redirect)
    app.add_exception_handler(pages.Refused, on_refused)
    app.include_router(login.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="vigil-static")
