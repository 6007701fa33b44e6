"""HTTP endpoints of build machine trials (``trials``): run an update on a build machine
before its diff. Starting one needs ``push`` (the CI that uploaded the build) or
``admin``; reading needs ``read``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from changeover.control.auth.views import Pusher, Reader, ctx
from changeover.control.builds.services import get_update
from changeover.control.fleet import services, trials
from changeover.control.fleet.schemas import TrialOut
from changeover.control.http_input import EdgeRoute, Id, Number

router = APIRouter(prefix="/api/v1", tags=["builds"], route_class=EdgeRoute)


class TrialCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fleet: str
    """The build machine's fleet: its hosts, its application."""
    profile: str | None = Field(default=None, max_length=64)
    """Whose run spec to use; default: the fleet's active profile."""
    host: str | None = Field(default=None, max_length=64)
    """One host of the fleet; default: its first live one."""
    hold_s: Number = trials.HOLD_S
    ready_timeout_s: Number = trials.READY_TIMEOUT_S


@router.post("/updates/{update_id}/trials", status_code=201, response_model=TrialOut)
def create_trial(update_id: Id, body: TrialCreate, request: Request, who: Pusher) -> dict[str, Any]:
    """Run the update's build on a host of ``fleet`` and judge it (seed 000, step 1)."""
    c = ctx(request)
    with c.db.write() as s:
        row = trials.create(
            s,
            get_update(s, update_id),
            services.get_fleet(s, body.fleet),
            profile_name=body.profile,
            host_name=body.host,
            hold_s=body.hold_s,
            ready_timeout_s=body.ready_timeout_s,
            actor=who.actor,
        )
        out = trials.trial_dict(s, row)
    c.runner.wake()
    return out


@router.get("/updates/{update_id}/trials", response_model=list[TrialOut])
def list_trials(update_id: Id, request: Request, _: Reader) -> list[dict[str, Any]]:
    with ctx(request).db.read() as s:
        get_update(s, update_id)
        return [trials.trial_dict(s, t) for t in trials.of_update(s, update_id)]


@router.get("/trials/{trial_id}", response_model=TrialOut)
def show_trial(trial_id: Id, request: Request, _: Reader) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        return trials.trial_dict(s, trials.get(s, trial_id))
