"""``POST /sweeps`` (analyst): run checks on the connected agents now; ``GET /sweeps/{sweep_id}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field, StringConstraints

from controller.domain.sweeps import MAX_ENTRIES, Sweep
from controller.rest.common import AUTH, Analyst, Ctl, Viewer, errors
from controller.storage.serialize import rfc3339

router = APIRouter(tags=["sweeps"])


Name = Annotated[str, StringConstraints(pattern=r"\S", max_length=128)]


class SweepIn(BaseModel):
    checks: list[Name] = Field(default_factory=list, max_length=MAX_ENTRIES,
                               description="check ids; none: every check of the policy")
    agents: list[Name] | None = Field(default=None, max_length=MAX_ENTRIES,
                                      description="agent ids; absent: every connected agent")


class SweepOut(BaseModel):
    id: str
    requested_by: str
    requested_at: str
    checks: list[str]
    agents: list[str] = Field(description="the agents the sweep was sent to")
    status: str

    @classmethod
    def of(cls, sweep: Sweep) -> SweepOut:
        return cls(id=sweep.id, requested_by=sweep.requested_by, requested_at=rfc3339(sweep.requested_at) or "",
                   checks=list(sweep.checks), agents=list(sweep.agents), status=sweep.status)


@router.post("/sweeps", response_model=SweepOut, responses=errors(*AUTH, 400, 503))
def run_sweep(user: Analyst, ctl: Ctl, body: SweepIn | None = None) -> SweepOut:
    body = body or SweepIn()
    return SweepOut.of(ctl.sweeps.run(ctl.sessions, user.username, body.checks, body.agents))


@router.get("/sweeps/{sweep_id}", response_model=SweepOut, responses=errors(*AUTH, 404))
def get_sweep(sweep_id: str, _: Viewer, ctl: Ctl) -> SweepOut:
    return SweepOut.of(ctl.sweeps.get(sweep_id))
