"""Mirror profiles (seed 000): two profiles take turns at an image branch's versions.

A studio keeps, for each branch (production, staging, development), profiles A and B of
its game. The branch's fleets run one of them, the *live* one; the other is *idle*. A
release is then one step: bind the idle profile to the branch's new version
(:func:`rebind`) and switch the fleets from the live profile to it (``switches``), so
that the old version keeps serving until the new one is up, and the next release goes the
other way round.

A profile's version changes only while it is idle in the strictest sense: no fleet has it
active, none of its instances is live (the previous release's drained servers have all
stopped), and no unfinished switch or patch job names it. So an instance row's
``version_number`` never goes stale, and what a job was planned against is what it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from changeover.content.store import LocalStore
from changeover.control.builds.models import Image, Version
from changeover.control.builds.services import check_name, get_branch, resolve_version
from changeover.control.db import now
from changeover.control.fleet import services, switches
from changeover.control.fleet.models import (
    Fleet,
    Instance,
    Mirror,
    Profile,
    ProfileSwitch,
    live_instances,
)
from changeover.control.patchjobs import storage as patchjob_storage
from changeover.control.patchjobs.records import PatchJob
from changeover.control.states import JobState
from changeover.errors import Conflict, InvalidInput, NotFound


def _why_busy(s: Session, profile: Profile) -> str | None:
    """Why ``profile``'s version may not change now (None: it may)."""
    fleets = list(s.scalars(select(Fleet.name).where(Fleet.active_profile_id == profile.id)))
    if fleets:
        return (
            f"it is the active profile of fleet(s) {', '.join(sorted(fleets))}; switch them"
            " to another profile first"
        )
    live = s.scalar(select(func.count()).where(Instance.profile_id == profile.id, live_instances()))
    if live:
        return (
            f"{live} of its instance(s) still run (the last switch drains them until their"
            " players leave); wait until they have stopped"
        )
    switch = s.scalar(
        select(ProfileSwitch.id).where(
            or_(
                ProfileSwitch.to_profile_id == profile.id,
                ProfileSwitch.from_profile_id == profile.id,
            ),
            ProfileSwitch.status.not_in((JobState.COMPLETED, JobState.FAILED)),
        )
    )
    if switch is not None:
        return f"switch {switch} moves a fleet to or from it"
    for job in s.scalars(
        select(PatchJob).where(
            PatchJob.application_id == profile.application_id,
            PatchJob.status.not_in(patchjob_storage.TERMINAL),
        )
    ):
        spec = patchjob_storage.spec_of(job)
        if any(profile.id in (b.old_version_id, b.new_version_id) for b in spec.builds):
            return f"unfinished patch job {job.id} ({job.name}) names it"
    return None


def rebind(
    s: Session, store: LocalStore, profile: Profile, version: Version, actor: str
) -> Profile:
    """Bind an idle ``profile`` to ``version`` of the same image (nothing if it already is).

    Raises:
        InvalidInput: a version of another image, a command missing from the build.
        Conflict: the version is not completed; the profile is not idle (the message says
            what holds it).
    """
    if version.id == profile.version_id:
        return profile
    current = s.get_one(Version, profile.version_id)
    image = s.get_one(Image, current.image_id)
    if version.image_id != image.id:
        raise InvalidInput(
            f"profile {profile.name} runs image {image.name}; it can only move to another"
            " version of that image",
            profile=profile.name,
        )
    if version.status != JobState.COMPLETED:
        raise Conflict(
            f"version {version.number} of {image.name} is {JobState(version.status).label};"
            " a profile needs a completed version"
        )
    why = _why_busy(s, profile)
    if why is not None:
        raise Conflict(
            f"profile {profile.name} cannot change version now: {why}", profile=profile.name
        )
    services.check_command_in_build(store, version, image, services.run_spec(profile))
    profile.version_id = version.id
    profile.rebound_at = now()
    profile.rebound_by = actor
    s.flush()
    return profile


# -- mirrors -------------------------------------------------------------------------------


def create(
    s: Session, *, name: str, image: Image, branch: str, profiles: tuple[str, str], actor: str
) -> Mirror:
    """Pair two profiles of one application, each bound to a version of ``image``, to take
    turns at ``branch``.

    Raises:
        InvalidInput: the same profile twice, profiles of two applications or of another
            image. NotFound: an unknown profile or branch. Conflict: the name is taken, a
            profile is already in a mirror.
    """
    check_name(name, "mirror name")
    if s.scalar(select(Mirror.id).where(Mirror.name == name)) is not None:
        raise Conflict(f"mirror {name} already exists", mirror=name)
    get_branch(s, image, branch)
    a, b = (services.get_profile(s, p) for p in profiles)
    if a.id == b.id:
        raise InvalidInput("a mirror pairs two different profiles", profile=a.name)
    if a.application_id != b.application_id:
        raise InvalidInput(f"profiles {a.name} and {b.name} belong to different applications")
    for p in (a, b):
        if s.get_one(Version, p.version_id).image_id != image.id:
            raise InvalidInput(
                f"profile {p.name} runs another image than {image.name}", profile=p.name
            )
        taken = s.scalar(
            select(Mirror.name).where(or_(Mirror.profile_a_id == p.id, Mirror.profile_b_id == p.id))
        )
        if taken is not None:
            raise Conflict(f"profile {p.name} is already in mirror {taken}", profile=p.name)
    row = Mirror(
        name=name,
        image_id=image.id,
        branch=branch,
        profile_a_id=a.id,
        profile_b_id=b.id,
        created_at=now(),
        created_by=actor,
    )
    s.add(row)
    s.flush()
    return row


def get(s: Session, name: str) -> Mirror:
    row = s.scalar(select(Mirror).where(Mirror.name == name))
    if row is None:
        known = ", ".join(s.scalars(select(Mirror.name).order_by(Mirror.name).limit(20)))
        raise NotFound(f"unknown mirror {name!r}; mirrors: {known or 'none yet'}", mirror=name)
    return row


def list_all(s: Session) -> list[Mirror]:
    return list(s.scalars(select(Mirror).order_by(Mirror.name)))


@dataclass(frozen=True)
class Sides:
    """Which of a mirror's profiles the fleets run (live) and which is free (idle)."""

    live: Profile | None
    idle: Profile | None
    fleets: list[Fleet]
    """The fleets running the live profile."""


def sides(s: Session, mirror: Mirror) -> Sides:
    """The mirror's live and idle profiles, by the fleets' active profiles. Both are None
    while no fleet runs either; both are None too, with the fleets listed, in the odd case
    of fleets running both (a release went one way for some fleets only)."""
    a = s.get_one(Profile, mirror.profile_a_id)
    b = s.get_one(Profile, mirror.profile_b_id)
    fleets = list(
        s.scalars(
            select(Fleet).where(Fleet.active_profile_id.in_((a.id, b.id))).order_by(Fleet.name)
        )
    )
    on = {f.active_profile_id for f in fleets}
    if len(on) != 1:
        return Sides(None, None, fleets)
    live, idle = (a, b) if a.id in on else (b, a)
    return Sides(live, idle, fleets)


@dataclass(frozen=True)
class Release:
    mirror: Mirror
    version: Version
    live: Profile
    """The profile the fleets run after the release."""
    released_from: Profile | None
    """The profile they ran before (None: nothing to release, they already run it)."""
    switches: list[ProfileSwitch]


def release(
    s: Session,
    store: LocalStore,
    mirror: Mirror,
    *,
    version_ref: str | None,
    drain_s: float,
    actor: str,
) -> Release:
    """Bind the idle profile to the branch's version (or ``version_ref``) and switch every
    fleet running the live one to it, all in the caller's transaction: either every fleet's
    switch is queued or nothing changed. Idempotent: a release of the version the fleets
    already run does nothing.

    Raises:
        NotFound: no fleet runs either profile, an unknown version.
        Conflict: fleets run both profiles, the idle profile is still busy, a fleet is
            being switched.
    """
    image = s.get_one(Image, mirror.image_id)
    version = (
        resolve_version(s, image, version_ref)
        if version_ref is not None
        else s.get_one(Version, get_branch(s, image, mirror.branch).version_id)
    )
    side = sides(s, mirror)
    if side.live is None or side.idle is None:
        if not side.fleets:
            raise NotFound(
                f"no fleet runs a profile of mirror {mirror.name}; create one with"
                " --profile set to one of them",
                mirror=mirror.name,
            )
        raise Conflict(
            f"the fleets of mirror {mirror.name} run both of its profiles"
            f" ({', '.join(f.name for f in side.fleets)}); switch them to one first",
            mirror=mirror.name,
        )
    if side.live.version_id == version.id:
        return Release(mirror, version, side.live, None, [])
    rebind(s, store, side.idle, version, actor)
    queued = [switches.create_switch(s, f, side.idle.name, drain_s, actor) for f in side.fleets]
    return Release(mirror, version, side.idle, side.live, queued)


__all__ = ["Release", "Sides", "create", "get", "list_all", "rebind", "release", "sides"]
