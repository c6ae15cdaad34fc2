"""``GET /devices`` (``?format=csv``): the devices sensors collect from, with what each last reported."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel

from controller.domain import devices
from controller.rest.common import AUTH, Ctl, Db, Viewer, errors

router = APIRouter(tags=["devices"])


class DeviceOut(BaseModel):
    asset: str
    name: str
    purpose: str
    address: str
    port: int
    connection: str
    ports_used: list[str]
    platform: str
    credential: str
    baseline: str
    rule_id: str
    version: str
    model: str
    serial: str
    os_name: str
    support: str
    support_detail: str
    last_collected: str | None
    reached: bool | None
    error: str
    sensor: str
    sensor_id: str
    open_tickets: int


Format = Annotated[Literal["json", "csv"], Query(description="json, or csv for a spreadsheet")]


_CSV: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                                               "description": "the inventory: JSON, or CSV with format=csv"}}


@router.get("/devices", response_model=list[DeviceOut], responses={**errors(*AUTH), **_CSV})
def list_devices(s: Db, _: Viewer, ctl: Ctl, format: Format = "json") -> Any:
    """Every device a baseline in force names, completed from its latest result (SFA-ETG Art.22)."""
    rows = devices.inventory(s, ctl.baselines())
    if format == "csv":
        return Response(devices.csv_text(rows), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="vigil-devices.csv"'})
    return rows
