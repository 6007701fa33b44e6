"""Tables of the fleet domain.

    environments   applications ──< profiles >── versions (builds)
          │              │              │
          └────────< fleets >───────────┘ (active profile)
                         │
    regions ──< hosts ──< instances >── profiles      sessions >── instances
                         fleet_hosts                   profile_switches (jobs)
    version_compat: the client versions an image version accepts
    mirrors: two profiles taking turns at an image branch's versions (``fleet.mirrors``)

Instances hold both sides of the desired/observed split: ``desired`` (running, draining,
stopped, with a drain deadline and a shutdown notice) is written by the control plane;
``state``, ``pid``, ``port`` and the ``sdk_*`` columns are what the host's agent last
reported. ``players`` counts open sessions and only ever changes by atomic updates
(compare-and-set on allocation), never by a read-modify-write. ``version_number`` copies the
profile's version number, so that Server Allocate's indexes can hold its order.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    event,
    false,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Mapped, Session, attributes, mapped_column

from changeover.control.builds.models import JobColumns, Version
from changeover.control.db import Base


class Environment(Base):
    __tablename__ = "environments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class Application(Base):
    __tablename__ = "applications"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """game or utility; may be left unset at first, fixed once set."""
    created_at: Mapped[float] = mapped_column(Float)


class Region(Base):
    __tablename__ = "regions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class VersionCompat(Base):
    """The client versions an image version accepts (inclusive; NULL = no bound)."""

    __tablename__ = "version_compat"

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), primary_key=True)
    client_min: Mapped[str | None] = mapped_column(String(40), nullable=True)
    client_max: Mapped[str | None] = mapped_column(String(40), nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)


class Profile(Base):
    """How to run one image version (seed 000). Its spec never changes; its version may,
    only while nothing runs it or is about to (``fleet.mirrors.rebind``)."""

    __tablename__ = "profiles"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"))
    spec: Mapped[str] = mapped_column(Text)
    """The RunSpec as JSON (changeover.runspec)."""
    capacity: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(200))
    rebound_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    """When its version was last changed, and by whom (None: never)."""
    rebound_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class Mirror(Base):
    """Seed 000's mirror profiles: profiles A and B of one application take turns at the
    versions of one branch of an image. The fleets run one of them (live); a release binds
    the other (idle) to the branch's version and switches those fleets to it."""

    __tablename__ = "mirrors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    branch: Mapped[str] = mapped_column(String(64))
    profile_a_id: Mapped[int] = mapped_column(ForeignKey("profiles.id"), unique=True)
    profile_b_id: Mapped[int] = mapped_column(ForeignKey("profiles.id"), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(200))


class Fleet(Base):
    __tablename__ = "fleets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), index=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"))
    active_profile_id: Mapped[int | None] = mapped_column(ForeignKey("profiles.id"), nullable=True)
    instances_per_host: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class FleetHost(Base):
    """A host of a fleet, by name, so a fleet can list a host before its agent first runs."""

    __tablename__ = "fleet_hosts"

    fleet_id: Mapped[int] = mapped_column(ForeignKey("fleets.id"), primary_key=True)
    host_name: Mapped[str] = mapped_column(String(64), primary_key=True)


class Host(Base):
    """A machine running the agent; created when an agent first registers its name."""

    __tablename__ = "hosts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    region_id: Mapped[int] = mapped_column(ForeignKey("regions.id"), index=True)
    address: Mapped[str] = mapped_column(String(255))
    slots: Mapped[int] = mapped_column(Integer)
    agent_uid: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[float] = mapped_column(Float)
    last_seen_at: Mapped[float] = mapped_column(Float)
    agent_version: Mapped[str] = mapped_column(String(40), default="")
    staged: Mapped[str] = mapped_column(Text, default="[]")
    """Manifest ids the agent has staged, as JSON."""
    desired_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    """When something of the host's desired state that is not an instance row last changed
    (a build to stage, a fleet edit, a job over): its next sync is not a quiet one
    (``fleet.quiet``); instance rows say so themselves (``Instance.changed_at``)."""


ALLOCATABLE_SQL = "state = 'ready' AND desired = 'running' AND players < capacity"
"""The rows the allocation indexes hold: ready, taking players, with at least one place.
A query uses those (partial) indexes only if its ``WHERE`` states these very terms, with
literals, not bound parameters (``control.fleet.allocate_db``)."""


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    # No index of its own: ix_instances_fleet_changed starts with it (one less to write).
    fleet_id: Mapped[int] = mapped_column(ForeignKey("fleets.id"))
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id"), index=True)
    version_number: Mapped[int] = mapped_column(Integer)
    """Its profile's image version number (``versions.number``), copied here so that the
    allocation indexes can sort by it. A profile changes version only while none of its
    instances is live (``mirrors.rebind``), so for live rows it changes only with
    ``profile_id``; ``_fill_version_numbers`` keeps the two in step on every flush, whoever
    sets the profile."""
    # No index of its own: ix_instances_host_fleet starts with it.
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"))
    # A plain integer: a key from the table to itself buys nothing here.
    replaces_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    standin_for: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The lost host whose instance this one replaces until it is back (``standins``)."""
    trial_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The build machine trial it runs (``trials``): the trial's update, not its profile's
    version; no fleet rule, switch or job counts, replaces or allocates it."""
    launch_key: Mapped[str | None] = mapped_column(
        String(200), nullable=True, unique=True, index=True
    )
    """The key of the patch-job StartInstance that created it (creating it twice fails)."""
    capacity: Mapped[int] = mapped_column(Integer)
    players: Mapped[int] = mapped_column(Integer, default=0)
    # -- desired (control plane) ------------------------------------------------------
    desired: Mapped[str] = mapped_column(String(16), index=True)
    drain_reason: Mapped[str | None] = mapped_column(String(256), nullable=True)
    drain_deadline: Mapped[float | None] = mapped_column(Float, nullable=True)
    notice_reason: Mapped[str | None] = mapped_column(String(256), nullable=True)
    notice_deadline: Mapped[float | None] = mapped_column(Float, nullable=True)
    stop_signal: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """Overrides the profile's stop signal (a patch job's stop method); SIGKILL = hard kill."""
    stop_timeout_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Overrides the profile's ``stop_timeout_s``."""
    slot: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The state slot of its fleet on its host: its own directory there, which a
    replacement may take over (``placement.pick_slot``). None only for rows older than slots,
    until their host's next sync."""
    # -- observed (agent) ---------------------------------------------------------------
    state: Mapped[str] = mapped_column(String(16))
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ports: Mapped[str] = mapped_column(Text, default="{}")
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    sdk_ready: Mapped[bool] = mapped_column(Boolean, default=False)
    sdk_players: Mapped[str] = mapped_column(Text, default="[]")
    sdk_labels: Mapped[str] = mapped_column(Text, default="{}")
    sdk_state_saved: Mapped[bool] = mapped_column(Boolean, default=False)
    sdk_annotations: Mapped[str] = mapped_column(Text, server_default="{}")
    """What a game told Agones' SDK (``changeover.agones``): its annotations, ..."""
    sdk_allocated: Mapped[bool] = mapped_column(Boolean, server_default=false())
    """... that it is allocated (in a match), or reserved: no new players while either is
    (``capacity`` is 0 then), ..."""
    sdk_reserved: Mapped[bool] = mapped_column(Boolean, server_default=false())
    sdk_player_capacity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """... and the player capacity it set, which ``capacity`` follows (None: the profile's)."""
    state_saved_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    """When the game last turned "state saved" on (seen at a sync)."""
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """How its last process ended, as the agent saw it: the exit code (None if a signal
    ended it or the agent could not know), ..."""
    exit_signal: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """... the signal that ended it, ..."""
    exit_how: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """... exited (by itself, while being stopped), killed (after the stop timeout) or
    crashed (while meant to run), ..."""
    exit_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """... why it was being stopped (stop, failed health check), and when."""
    exited_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    observed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ready_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    stopped_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    changed_at: Mapped[float] = mapped_column(Float, server_default="0")
    """When the row last changed, by the database's clock: set by the database itself on
    every write, bulk UPDATEs included (migration 0010's triggers), for the readers that
    follow changes (``patchjobs.job_view``). The ORM never writes it, and an ORM object's
    value may be stale: read it with a query."""
    sync_changed_at: Mapped[float] = mapped_column(Float, server_default="0")
    """When something an agent's sync is told of this instance last changed (what
    ``fleet.desired`` answers with, whether it lives, a draining one's players), by the
    database's clock, set by the same triggers (migration 0016): the players Server
    Allocate adds to a running instance do not make its host's next sync a full one."""


LIVE_SQL = "desired != 'stopped' OR state != 'stopped'"
"""``live_instances`` as the literal SQL that ix_instances_host_live is partial on: a query
uses that index only if its ``WHERE`` states these very terms (``live_sql``)."""


def live_sql() -> ColumnElement[bool]:
    """``live_instances()`` in the words of ix_instances_host_live (one table queries)."""
    return text(f"({LIVE_SQL})")  # type: ignore[return-value]


def fleet_member() -> ColumnElement[bool]:
    """Instances a fleet's rules, switches and jobs manage: all but trials'."""
    return Instance.trial_id.is_(None)


def live_instances() -> ColumnElement[bool]:
    """Instances that still matter: one stopped and meant to stay stopped is history."""
    return or_(Instance.desired != "stopped", Instance.state != "stopped")


def finished_instances() -> ColumnElement[bool]:
    """The history: stopped and meant to stay stopped (kept for ``Settings.retention_s``)."""
    return and_(Instance.desired == "stopped", Instance.state == "stopped")


# Server Allocate walks one of these in order and stops after a few rows: the best candidates
# of a fleet (or profile) come first, with no sort of the fleet's instances.
for _name, _scope in (
    ("ix_instances_alloc_fleet", Instance.fleet_id),
    ("ix_instances_alloc_profile", Instance.profile_id),
):
    Index(
        _name,
        _scope,
        Instance.version_number.desc(),
        Instance.players.desc(),
        Instance.id,
        sqlite_where=text(ALLOCATABLE_SQL),
        postgresql_where=text(ALLOCATABLE_SQL),
    )
# What changed in a job's fleets since its last pass (``patchjobs.job_view``), on a host
# since its agent's last sync (``fleet.quiet``), and the slots a fleet holds on a host
# (``fleet.launch``).
Index("ix_instances_fleet_changed", Instance.fleet_id, Instance.changed_at)
Index("ix_instances_host_sync_changed", Instance.host_id, Instance.sync_changed_at)
Index("ix_instances_host_fleet", Instance.host_id, Instance.fleet_id)
# A host's live instances (a sync reads them), and the slots each fleet holds there
# (``fleet.launch``), without its history of stopped ones.
Index(
    "ix_instances_host_live",
    Instance.host_id,
    Instance.fleet_id,
    Instance.slot,
    sqlite_where=text(LIVE_SQL),
    postgresql_where=text(LIVE_SQL),
)


def _profile_changed(row: Instance) -> bool:
    return attributes.get_history(row, "profile_id").has_changes()


@event.listens_for(Session, "before_flush")
def _fill_version_numbers(s: Session, _ctx: Any, _instances: Any) -> None:
    """Set ``Instance.version_number`` from the profile, for new rows that lack it and for
    rows whose ``profile_id`` changed: one query per flush, whatever the number of rows."""
    rows = [o for o in s.new if isinstance(o, Instance) and o.version_number is None]
    rows += [o for o in s.dirty if isinstance(o, Instance) and _profile_changed(o)]
    if not rows:
        return
    wanted = {o.profile_id for o in rows}
    with s.no_autoflush:
        numbers = dict(
            s.execute(
                select(Profile.id, Version.number)
                .join(Version, Version.id == Profile.version_id)
                .where(Profile.id.in_(wanted))
            ).all()
        )
    for o in rows:
        if o.profile_id in numbers:  # else the insert fails on the profile's foreign key
            o.version_number = numbers[o.profile_id]


class GameSession(Base):
    """One allocation: a party placed on an instance, until its players leave."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id"), index=True)
    fleet_id: Mapped[int] = mapped_column(ForeignKey("fleets.id"), index=True)
    players: Mapped[str] = mapped_column(Text)
    """Player ids as JSON; the instance's SDK reports the same ids when they connect."""
    size: Mapped[int] = mapped_column(Integer)
    party: Mapped[str | None] = mapped_column(String(128), nullable=True)
    client_version: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    """reserved (allocated, nobody seen yet), connected, ended or expired."""
    created_at: Mapped[float] = mapped_column(Float)
    connected_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        # Only ended (and expired) sessions, for ``sessions.prune``: an open session, as
        # every allocation inserts, gets no entry.
        Index(
            "ix_sessions_ended_at",
            "ended_at",
            sqlite_where=text("ended_at IS NOT NULL"),
            postgresql_where=text("ended_at IS NOT NULL"),
        ),
    )


class ProfileSwitch(JobColumns, Base):
    """Fleet Profile Switch (seed 000): a job that moves a fleet to another profile."""

    __tablename__ = "profile_switches"

    id: Mapped[int] = mapped_column(primary_key=True)
    fleet_id: Mapped[int] = mapped_column(ForeignKey("fleets.id"), index=True)
    from_profile_id: Mapped[int | None] = mapped_column(ForeignKey("profiles.id"), nullable=True)
    to_profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id"))
    drain_s: Mapped[float] = mapped_column(Float)
    total: Mapped[int] = mapped_column(Integer)
    moved: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    wake_at: Mapped[float | None] = mapped_column(Float, nullable=True)


__all__ = [
    "Application",
    "Environment",
    "Fleet",
    "FleetHost",
    "GameSession",
    "Host",
    "Instance",
    "Mirror",
    "Profile",
    "ProfileSwitch",
    "Region",
    "VersionCompat",
]
