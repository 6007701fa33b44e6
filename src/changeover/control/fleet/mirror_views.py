"""HTTP endpoints of mirror profiles (``mirrors``): pair two profiles, release a branch's
version with one call, and rebind an idle profile by hand. Reading needs ``read``; the rest
``admin``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from changeover.control.auth.views import Admin, Reader, ctx
from changeover.control.builds.models import Image, Version
from changeover.control.builds.services import get_branch, get_image, resolve_version
from changeover.control.fleet import mirrors, placement, services, switches
from changeover.control.fleet.models import Mirror, Profile
from changeover.control.fleet.schemas import MirrorOut, ProfileOut, ReleaseOut
from changeover.control.fleet.views import profile_dict
from changeover.control.http_input import EdgeRoute, Number

router = APIRouter(prefix="/api/v1", tags=["fleet"], route_class=EdgeRoute)


class MirrorCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    image: str
    branch: str
    profiles: list[str] = Field(min_length=2, max_length=2)
    """Profiles A and B, in that order."""


class ReleaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(default=None, max_length=100)
    """A version of the image (number, label, manifest id, latest); default: the branch's."""
    drain_s: Number = placement.DRAIN_S


class ProfileRebind(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(max_length=100)


def mirror_dict(s: Session, row: Mirror) -> dict[str, Any]:
    image = s.get_one(Image, row.image_id)
    branch = get_branch(s, image, row.branch)
    side = mirrors.sides(s, row)
    out = []
    for pid in (row.profile_a_id, row.profile_b_id):
        p = s.get_one(Profile, pid)
        v = s.get_one(Version, p.version_id)
        role = (
            "live"
            if side.live is not None and p.id == side.live.id
            else "idle"
            if side.idle is not None and p.id == side.idle.id
            else "unknown"
        )
        out.append({"profile": p.name, "version": v.number, "version_label": v.label, "role": role})
    return {
        "id": row.id,
        "name": row.name,
        "image": image.name,
        "branch": row.branch,
        "branch_version": s.get_one(Version, branch.version_id).number,
        "profiles": out,
        "fleets": [f.name for f in side.fleets],
        "up_to_date": side.live is not None and side.live.version_id == branch.version_id,
        "created_at": row.created_at,
        "created_by": row.created_by,
    }


@router.post("/mirrors", status_code=201, response_model=MirrorOut)
def create_mirror(body: MirrorCreate, request: Request, who: Admin) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        row = mirrors.create(
            s,
            name=body.name,
            image=get_image(s, body.image),
            branch=body.branch,
            profiles=(body.profiles[0], body.profiles[1]),
            actor=who.actor,
        )
        return mirror_dict(s, row)


@router.get("/mirrors", response_model=list[MirrorOut])
def list_mirrors(request: Request, _: Reader) -> list[dict[str, Any]]:
    with ctx(request).db.read() as s:
        return [mirror_dict(s, m) for m in mirrors.list_all(s)]


@router.get("/mirrors/{name}", response_model=MirrorOut)
def show_mirror(name: str, request: Request, _: Reader) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        return mirror_dict(s, mirrors.get(s, name))


@router.post("/mirrors/{name}/release", status_code=201, response_model=ReleaseOut)
def release(
    name: str, body: ReleaseCreate, request: Request, response: Response, who: Admin
) -> dict[str, Any]:
    """Bind the idle profile to the branch's version and switch the fleets to it (200 and
    no switch when they already run that version)."""
    c = ctx(request)
    with c.db.write() as s:
        done = mirrors.release(
            s,
            c.store,
            mirrors.get(s, name),
            version_ref=body.version,
            drain_s=body.drain_s,
            actor=who.actor,
        )
        out = {
            "mirror": done.mirror.name,
            "version": done.version.number,
            "version_label": done.version.label,
            "live": done.live.name,
            "released_from": done.released_from.name if done.released_from else None,
            "switches": [switches.switch_dict(s, sw) for sw in done.switches],
        }
    if not done.switches:
        response.status_code = 200
    c.runner.wake()
    return out


@router.put("/profiles/{name}/version", response_model=ProfileOut)
def rebind_profile(name: str, body: ProfileRebind, request: Request, who: Admin) -> dict[str, Any]:
    """Bind an idle profile (no fleet, instance or unfinished job uses it) to another
    version of its image."""
    c = ctx(request)
    with c.db.write() as s:
        profile = services.get_profile(s, name)
        image = s.get_one(Image, s.get_one(Version, profile.version_id).image_id)
        version = resolve_version(s, image, body.version)
        return profile_dict(s, mirrors.rebind(s, c.store, profile, version, who.actor))
