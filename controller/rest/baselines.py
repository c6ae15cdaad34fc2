"""Baselines: ``GET /baselines``, ``GET /baselines/{name}``, ``PUT /baselines/{name}`` (admin).

A PUT takes the YAML text itself (any content type but JSON) or ``{"yaml": TEXT}`` as JSON, with the file
name for messages in ``X-Vigil-Filename``; a body above the baseline size limit is 413, unread. The document
is validated as a whole before it replaces the running one; a rejected one is 422 with every problem (file,
line, field, reason) and changes nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select

from common.errors import UsageError
from controller.baselines import MAX_BYTES, BaselineError, Problem, decode_baseline, too_large
from controller.errors import Conflict, NotFound
from controller.rest.common import AUTH, Admin, Ctl, Db, Viewer, errors
from controller.storage.models import Baseline
from controller.storage.serialize import rfc3339

router = APIRouter(tags=["baselines"])


class BaselineOut(BaseModel):
    name: str
    version: int
    applied_at: str
    applied_by: str
    document: dict[str, Any]
    source: str


class AppliedBaseline(BaseModel):
    name: str
    version: int
    rules: list[str]


def _baseline_json(b: Baseline) -> dict[str, Any]:
    return {"name": b.name, "version": b.version, "applied_at": rfc3339(b.applied_at),
            "applied_by": b.applied_by, "document": b.document, "source": b.source}


@router.get("/baselines", response_model=list[BaselineOut], responses=errors(*AUTH))
def list_baselines(s: Db, _: Viewer) -> list[dict[str, Any]]:
    return [_baseline_json(b) for b in s.execute(select(Baseline).order_by(Baseline.name)).scalars()]


@router.get("/baselines/{name}", response_model=BaselineOut, responses=errors(*AUTH, 404))
def get_baseline(name: str, s: Db, _: Viewer) -> dict[str, Any]:
    b = s.get(Baseline, name)
    if b is None:
        raise NotFound(f"no baseline {name!r}")
    return _baseline_json(b)


_PUT_BODY = {"requestBody": {"required": True, "content": {
    "application/yaml": {"schema": {"type": "string"}},
    "text/plain": {"schema": {"type": "string"}},
    "application/json": {"schema": {"type": "object", "required": ["yaml"],
                                    "properties": {"yaml": {"type": "string"}}}},
}}}


@router.put("/baselines/{name}", response_model=AppliedBaseline, responses=errors(*AUTH, 409, 413),
            openapi_extra=_PUT_BODY)
async def put_baseline(name: str, request: Request, user: Admin, ctl: Ctl) -> JSONResponse:
    filename = request.headers.get("x-vigil-filename", f"{name}.yaml")

    def refused(exc: BaselineError, status: int = 422) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "problems": [
            {"file": filename, "line": ln, "field": fld, "reason": why} for ln, fld, why in exc.problems
        ]}, status_code=status)

    # An oversized body is refused before it is read: by the length it declares, then as it arrives.
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BYTES:
        return refused(BaselineError(filename, [Problem(0, "", too_large(int(declared)))]), 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BYTES:
            return refused(BaselineError(filename, [Problem(0, "", too_large(None))]), 413)
    raw: str | bytes = bytes(body)
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            raw = str(json.loads(decode_baseline(raw, filename))["yaml"])
        except BaselineError as exc:
            return refused(exc)
        except (ValueError, KeyError, TypeError, RecursionError):
            raise HTTPException(422, 'JSON body must be {"yaml": "<baseline text>"}') from None
    try:
        doc = await _in_thread(ctl.apply_baseline, raw, filename, user.username, expect_name=name)
    except BaselineError as exc:
        return refused(exc)
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from exc
    except UsageError as exc:
        raise HTTPException(422, str(exc)) from exc
    return JSONResponse({"name": doc.name, "version": doc.version, "rules": [x.id for x in doc.rules]})


async def _in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))
