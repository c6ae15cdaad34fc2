"""The security staff's web UI: server-rendered pages (Jinja2) on the controller's HTTP port.

Public: ``register(app, ctl, channel)`` mounts the pages and static files on the FastAPI app.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from common import __version__
from controller.core import Controller


def register(app: FastAPI, ctl: Controller, channel: Any = None) -> None:
    @app.get("/", include_in_schema=False)
    def root() -> PlainTextResponse:
        return PlainTextResponse(
            f"Vigil controller {__version__}\nREST API: /api/v1 (OpenAPI: /api/v1/openapi.json, docs: /api/v1/docs)\n"
        )
