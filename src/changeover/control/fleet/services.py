"""The fleet catalogue: environments, applications, regions, profiles, fleets, compatibility,
and the instances as the API lists them (with the pruning of long-stopped ones).

Functions take an open session and plain values and raise our errors; the HTTP views call
them. Agents (``hosts``), allocation (``allocate_db``), sessions (``sessions``) and profile
switches (``tasks``) have their own modules. Names follow the builds domain's rule
(lowercase, digits, ``.``, ``_``, ``-``), so they read the same in URLs, CLI arguments and
logs.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from changeover.content.store import LocalStore
from changeover.control.builds.models import Image, Version
from changeover.control.builds.services import check_name, get_image, resolve_version
from changeover.control.db import now, rowcount
from changeover.control.fleet.allocation import parse_client_version
from changeover.control.fleet.models import (
    Application,
    Environment,
    Fleet,
    FleetHost,
    GameSession,
    Host,
    Instance,
    Profile,
    Region,
    VersionCompat,
    finished_instances,
    live_instances,
)
from changeover.control.states import JobState
from changeover.errors import Conflict, InvalidInput, NotFound
from changeover.runspec import RunSpec

APP_TYPES = ("game", "utility")
LOST_AFTER_S = 10.0
"""A host whose agent has not synced for this long is lost: its instances take no players."""
MAX_PER_HOST = 1000
MAX_FLEET_HOSTS = 1000


def _known(s: Session, model: Any, what: str) -> str:
    names = list(s.scalars(select(model.name).order_by(model.name).limit(20)))
    return f"known {what}: {', '.join(names)}" if names else f"no {what} exist yet"


# -- environments and regions --------------------------------------------------------------


def create_environment(s: Session, name: str) -> Environment:
    check_name(name, "environment name")
    if s.scalar(select(Environment.id).where(Environment.name == name)) is not None:
        raise Conflict(f"environment {name} already exists", environment=name)
    row = Environment(name=name, created_at=now())
    s.add(row)
    s.flush()
    return row


def get_environment(s: Session, name: str) -> Environment:
    row = s.scalar(select(Environment).where(Environment.name == name))
    if row is None:
        raise NotFound(
            f"unknown environment {name!r}; {_known(s, Environment, 'environments')}",
            environment=name,
        )
    return row


def list_environments(s: Session) -> list[Environment]:
    return list(s.scalars(select(Environment).order_by(Environment.name)))


def create_region(s: Session, name: str) -> Region:
    check_name(name, "region name")
    if s.scalar(select(Region.id).where(Region.name == name)) is not None:
        raise Conflict(f"region {name} already exists", region=name)
    row = Region(name=name, created_at=now())
    s.add(row)
    s.flush()
    return row


def get_region(s: Session, name: str) -> Region:
    row = s.scalar(select(Region).where(Region.name == name))
    if row is None:
        raise NotFound(
            f"unknown region {name!r}; {_known(s, Region, 'regions')}"
            " (an admin creates one with 'changeover region create')",
            region=name,
        )
    return row


def list_regions(s: Session) -> list[Region]:
    return list(s.scalars(select(Region).order_by(Region.name)))


# -- applications --------------------------------------------------------------------------


def _check_type(app_type: str) -> str:
    if app_type not in APP_TYPES:
        raise InvalidInput(f"application type {app_type!r} must be game or utility")
    return app_type


def create_application(s: Session, name: str, app_type: str | None) -> Application:
    check_name(name, "application name")
    if app_type is not None:
        _check_type(app_type)
    if s.scalar(select(Application.id).where(Application.name == name)) is not None:
        raise Conflict(f"application {name} already exists", application=name)
    row = Application(name=name, type=app_type, created_at=now())
    s.add(row)
    s.flush()
    return row


def set_application_type(app: Application, app_type: str) -> Application:
    """Set the type once (seed 001: a game never becomes a utility, or back).

    Raises:
        Conflict: the application already has another type.
    """
    _check_type(app_type)
    if app.type is not None and app.type != app_type:
        raise Conflict(
            f"application {app.name} is of type {app.type}; the type is fixed once set",
            application=app.name,
            type=app.type,
        )
    app.type = app_type
    return app


def get_application(s: Session, name: str) -> Application:
    row = s.scalar(select(Application).where(Application.name == name))
    if row is None:
        raise NotFound(
            f"unknown application {name!r}; {_known(s, Application, 'applications')}",
            application=name,
        )
    return row


def list_applications(s: Session) -> list[Application]:
    return list(s.scalars(select(Application).order_by(Application.name)))


# -- version compatibility -----------------------------------------------------------------


def set_compat(
    s: Session, version: Version, client_min: str | None, client_max: str | None
) -> VersionCompat:
    """Declare which client versions an image version accepts (inclusive bounds)."""
    lo = parse_client_version(client_min, "client_min") if client_min is not None else None
    hi = parse_client_version(client_max, "client_max") if client_max is not None else None
    if lo is not None and hi is not None and lo > hi:
        raise InvalidInput(f"client_min {client_min} is above client_max {client_max}")
    row = s.get(VersionCompat, version.id)
    if row is None:
        row = VersionCompat(version_id=version.id)
        s.add(row)
    row.client_min, row.client_max, row.updated_at = client_min, client_max, now()
    s.flush()
    return row


def get_compat(s: Session, version_id: int) -> tuple[str | None, str | None]:
    row = s.get(VersionCompat, version_id)
    return (row.client_min, row.client_max) if row is not None else (None, None)


# -- profiles ------------------------------------------------------------------------------


def check_command_in_build(
    store: LocalStore, version: Version, image: Image, spec: RunSpec
) -> None:
    """A command given as a path inside the build must be a file of that build."""
    program = spec.command[0]
    if "/" not in program or program.startswith("/") or "{" in program:
        return  # a program on the host's PATH or an absolute path: only the agent can tell
    rel = posixpath.normpath(program)
    entry = store.get_manifest(version.manifest_id).get(rel)
    if entry is None:
        raise InvalidInput(
            f"command {program!r} is not a file of version {version.number} of image"
            f" {image.name}; check the path (it is relative to the build's root)",
            command=program,
        )
    if entry.link is None and not entry.executable:
        raise InvalidInput(
            f"command {program!r} is not executable in version {version.number} of"
            f" {image.name} (mode {entry.mode:o}); run it through its interpreter instead",
            command=program,
        )


def create_profile(
    s: Session,
    store: LocalStore,
    *,
    name: str,
    application: Application,
    image_name: str,
    version_ref: str,
    spec: dict[str, Any],
    actor: str,
) -> Profile:
    """A profile: one completed image version and how to run it.

    Raises:
        InvalidInput: a bad spec, or a command path that is not in the build.
        NotFound: unknown image or version. Conflict: the name is taken, the version
            is not completed yet.
    """
    check_name(name, "profile name")
    if s.scalar(select(Profile.id).where(Profile.name == name)) is not None:
        raise Conflict(f"profile {name} already exists; profiles are immutable", profile=name)
    run = RunSpec.from_dict(spec)
    image = get_image(s, image_name)
    version = resolve_version(s, image, version_ref)
    if version.status != JobState.COMPLETED:
        raise Conflict(
            f"version {version.number} of {image.name} is {JobState(version.status).label};"
            " a profile needs a completed version"
        )
    check_command_in_build(store, version, image, run)
    row = Profile(
        name=name,
        application_id=application.id,
        version_id=version.id,
        spec=json.dumps(run.to_dict(), sort_keys=True),
        capacity=run.capacity,
        created_at=now(),
        created_by=actor,
    )
    s.add(row)
    s.flush()
    return row


def get_profile(s: Session, name: str) -> Profile:
    row = s.scalar(select(Profile).where(Profile.name == name))
    if row is None:
        raise NotFound(f"unknown profile {name!r}; {_known(s, Profile, 'profiles')}", profile=name)
    return row


def list_profiles(s: Session, application: Application | None = None) -> list[Profile]:
    q = select(Profile).order_by(Profile.name)
    if application is not None:
        q = q.where(Profile.application_id == application.id)
    return list(s.scalars(q))


def run_spec(profile: Profile) -> RunSpec:
    return RunSpec.from_dict(json.loads(profile.spec))


# -- fleets --------------------------------------------------------------------------------


def _check_hosts(hosts: list[str]) -> list[str]:
    if len(hosts) > MAX_FLEET_HOSTS:
        raise InvalidInput(f"a fleet lists at most {MAX_FLEET_HOSTS} hosts")
    for h in hosts:
        check_name(h, "host name")
    return sorted(set(hosts))


def _check_per_host(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_PER_HOST:
        raise InvalidInput(f"instances_per_host must be 0 to {MAX_PER_HOST}")
    return n


def _profile_for(s: Session, fleet_app: Application, profile_name: str) -> Profile:
    profile = get_profile(s, profile_name)
    if profile.application_id != fleet_app.id:
        raise InvalidInput(
            f"profile {profile.name} belongs to another application, not {fleet_app.name}",
            profile=profile.name,
        )
    return profile


def create_fleet(
    s: Session,
    *,
    name: str,
    application: Application,
    environment: Environment,
    hosts: list[str],
    instances_per_host: int,
    profile_name: str | None,
) -> Fleet:
    check_name(name, "fleet name")
    hosts = _check_hosts(hosts)
    _check_per_host(instances_per_host)
    if s.scalar(select(Fleet.id).where(Fleet.name == name)) is not None:
        raise Conflict(f"fleet {name} already exists", fleet=name)
    profile = _profile_for(s, application, profile_name) if profile_name else None
    row = Fleet(
        name=name,
        application_id=application.id,
        environment_id=environment.id,
        active_profile_id=profile.id if profile else None,
        instances_per_host=instances_per_host,
        created_at=now(),
        updated_at=now(),
    )
    s.add(row)
    s.flush()
    s.add_all(FleetHost(fleet_id=row.id, host_name=h) for h in hosts)
    s.flush()
    touch_hosts(s, [row.id], now())
    return row


def update_fleet(
    s: Session, fleet: Fleet, *, hosts: list[str] | None, instances_per_host: int | None
) -> Fleet:
    """Change a fleet's hosts or size; agents converge at their next sync."""
    touch_hosts(s, [fleet.id], now())  # those it leaves
    if instances_per_host is not None:
        fleet.instances_per_host = _check_per_host(instances_per_host)
    if hosts is not None:
        hosts = _check_hosts(hosts)
        s.execute(delete(FleetHost).where(FleetHost.fleet_id == fleet.id))
        s.add_all(FleetHost(fleet_id=fleet.id, host_name=h) for h in hosts)
    fleet.updated_at = now()
    s.flush()
    touch_hosts(s, [fleet.id], now())  # those it comes to
    return fleet


def touch_hosts(s: Session, fleet_ids: Sequence[int], at: float) -> None:
    """Tell the hosts of ``fleet_ids`` (listed, or running one of their instances) that
    their desired state changed (``Host.desired_at``): their next sync is not a quiet one."""
    listed = select(FleetHost.host_name).where(FleetHost.fleet_id.in_(fleet_ids))
    running = select(Instance.host_id).where(Instance.fleet_id.in_(fleet_ids), live_instances())
    s.execute(
        update(Host)
        .where(or_(Host.name.in_(listed), Host.id.in_(running)))
        .values(desired_at=at)
        .execution_options(synchronize_session=False)
    )


def get_fleet(s: Session, name: str) -> Fleet:
    row = s.scalar(select(Fleet).where(Fleet.name == name))
    if row is None:
        raise NotFound(f"unknown fleet {name!r}; {_known(s, Fleet, 'fleets')}", fleet=name)
    return row


def list_fleets(s: Session) -> list[Fleet]:
    return list(s.scalars(select(Fleet).order_by(Fleet.name)))


def fleet_host_names(s: Session, fleet_id: int) -> list[str]:
    return list(
        s.scalars(
            select(FleetHost.host_name)
            .where(FleetHost.fleet_id == fleet_id)
            .order_by(FleetHost.host_name)
        )
    )


def fleet_instances(s: Session, fleet: Fleet, *, include_stopped: bool = False) -> list[Instance]:
    q = select(Instance).where(Instance.fleet_id == fleet.id).order_by(Instance.id)
    if not include_stopped:
        q = q.where(live_instances())
    return list(s.scalars(q))


def prune_instances(s: Session, stopped_before: float, limit: int) -> int:
    """Delete up to ``limit`` instances that stopped before ``stopped_before`` and that no
    session names any more (their sessions go first, by the same retention), the oldest
    first; how many were deleted.

    Every profile switch and patch job leaves one stopped row per replaced instance, and a
    host's sync reads past its stopped rows. A patch job keeps no reference to the rows
    it stopped: it knows which actions it issued by their keys, so it never starts a
    pruned instance again. Few rows wait here (the fleet's size per switch), so this
    filters the table rather than keeping an index for it.
    """
    oldest = (
        select(Instance.id)
        .where(
            finished_instances(),
            func.coalesce(Instance.stopped_at, Instance.updated_at) < stopped_before,
            ~exists().where(GameSession.instance_id == Instance.id),
        )
        .order_by(func.coalesce(Instance.stopped_at, Instance.updated_at), Instance.id)
        .limit(limit)
    )
    return rowcount(s.execute(delete(Instance).where(Instance.id.in_(oldest))))


def get_instance(s: Session, instance_id: int) -> Instance:
    row = s.get(Instance, instance_id)
    if row is None:
        raise NotFound(f"no instance with id {instance_id}", instance_id=instance_id)
    return row


def instance_counts(s: Session, fleet: Fleet) -> dict[str, int]:
    rows = s.execute(
        select(Instance.desired, func.count())
        .where(Instance.fleet_id == fleet.id)
        .where(live_instances())
        .group_by(Instance.desired)
    )
    return {str(desired): int(n) for desired, n in rows.tuples()}


def hosts_by_id(s: Session, ids: set[int]) -> dict[int, Host]:
    if not ids:
        return {}
    return {h.id: h for h in s.scalars(select(Host).where(Host.id.in_(ids)))}


def profile_names(s: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(s.execute(select(Profile.id, Profile.name).where(Profile.id.in_(ids))).all())
