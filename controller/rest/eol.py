"""The REST view of the controller's EOL dataset.

``GET /api/v1/eol/dataset`` (viewer): version, source, counts and where it was loaded from
``GET /api/v1/eol/dataset/document`` (viewer): the dataset document itself
``PUT /api/v1/eol/dataset`` (admin): replace it with the request body (format in docs/eol-dataset.md)

Register with :func:`register_routes` from ``controller.rest.app.create_app``. No ``from __future__ import
annotations`` here: FastAPI must evaluate the ``Annotated`` dependencies.
"""

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from controller.eoldata import MAX_DATASET_BYTES, Dataset, DatasetError, parse_dataset

if TYPE_CHECKING:
    from controller.core import Controller


class Message(BaseModel):
    detail: str


class Problem(BaseModel):
    where: str = Field(description="product, cycle and field, e.g. products.debian[12].eol")
    reason: str


class Refused(BaseModel):
    """A dataset that was not accepted: one line in ``detail``, every problem in ``problems``."""

    detail: str
    problems: list[Problem]


class DatasetDocument(BaseModel):
    """The dataset file format (docs/eol-dataset.md); validated by the controller, not by this schema."""

    model_config = ConfigDict(extra="forbid")
    format: int = Field(description="1")
    generated: str = Field(description="YYYY-MM-DD: the dataset version")
    source: str
    title: str = ""
    notes: dict[str, str] = {}
    rolling: dict[str, str] = Field(default={}, description="product id of a rolling release -> what it is")
    products: dict[str, list[dict[str, Any]]] = Field(description="product id -> its release cycles")


class DatasetSummary(BaseModel):
    version: str
    source: str
    title: str
    label: str = Field(description="how findings name the dataset, e.g. 'endoflife.date as of 2026-11-21'")
    products: int
    cycles: int
    product_names: list[str]
    rolling: list[str]
    origin: str = Field(description="packaged, imported or file")
    loaded_from: str | None
    problem: str = Field("", description="why an imported file on disk is not being used, if it is not")


class Imported(DatasetSummary):
    path: str
    previous_version: str | None


_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": Message, "description": "missing or invalid API key"},
    403: {"model": Message, "description": "the API key's role may not do this"},
}


def _summary(ds: Dataset, problem: str = "") -> dict[str, Any]:
    return {**ds.summary(), "problem": problem}


def register_routes(router: APIRouter, ctl: "Controller", need: Callable[[str], Callable[..., Any]]) -> None:
    """Add the EOL dataset routes to ``router`` (the /api/v1 router of controller.rest.app)."""
    from controller.domain import audit
    from controller.storage.models import User

    @router.get("/eol/dataset", response_model=DatasetSummary, responses=_AUTH)
    def get_eol_dataset(_: Annotated[User, Depends(need("viewer"))]) -> dict[str, Any]:
        return _summary(ctl.eol.dataset(), ctl.eol.problem)

    @router.get("/eol/dataset/document", responses={200: {"model": DatasetDocument}, **_AUTH})
    def get_eol_document(_: Annotated[User, Depends(need("viewer"))]) -> JSONResponse:
        return JSONResponse(ctl.eol.dataset().document)

    @router.put(
        "/eol/dataset",
        response_model=Imported,
        responses={
            **_AUTH,
            413: {"model": Message, "description": f"the body is larger than {MAX_DATASET_BYTES} bytes"},
            422: {"model": Refused, "description": "the body is not a valid EOL dataset; nothing was stored"},
            507: {"model": Message, "description": "the dataset could not be written to the data directory"},
        },
        openapi_extra={"requestBody": {
            "required": True, "description": "an EOL dataset document",
            "content": {"application/json": {"schema": DatasetDocument.model_json_schema()}}}},
    )
    async def put_eol_dataset(request: Request, user: Annotated[User, Depends(need("admin"))]) -> Any:
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_DATASET_BYTES:
                raise HTTPException(413, f"an EOL dataset may be at most {MAX_DATASET_BYTES} bytes")
        name = request.headers.get("x-vigil-filename", "request body")[:200] or "request body"
        try:
            ds = parse_dataset(bytes(raw), name)
        except DatasetError as exc:
            return JSONResponse({"detail": str(exc), "problems": [
                {"where": where, "reason": why} for where, why in exc.problems]}, status_code=422)

        def work() -> dict[str, Any]:
            previous = ctl.eol.stored()  # None when the stored file is broken: an import also replaces it
            try:
                with ctl.sessions.begin() as s:
                    audit.record(s, user.username, "eol.dataset.import", "eol", ds.version, {
                        "previous_version": previous.version if previous else None,
                        "previous_origin": previous.origin if previous else "invalid",
                        "products": len(ds.products), "cycles": ds.cycle_count, "source": ds.source,
                    })
                    # Last inside the transaction: if the write fails, the audit entry is rolled back too.
                    path = ctl.eol.replace(ds)
            except OSError as exc:
                raise HTTPException(507, f"cannot store the EOL dataset in {ctl.config.data_dir}: "
                                         f"{exc.strerror or exc}") from None
            return {**_summary(ctl.eol.dataset()), "path": str(path),
                    "previous_version": previous.version if previous else None}

        return await asyncio.get_running_loop().run_in_executor(None, work)
