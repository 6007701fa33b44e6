"""Tables of patch jobs: the job, its keyed actions, its events, its report addresses.

    patch_jobs ──< patch_job_actions    (the outbox of desired-state writes, unique by key)
         │─────< patch_job_events     (what happened, in order; reports and the UI read it)
         └─────< patch_job_emails     (who gets progress and result reports)
    allocation_weights                 (per fleet and profile; written by SwitchAllocation)

A "build" of seed 001 is a profile here (an image version and how to run it), so the pure
core's ``version_id`` fields hold profile ids. ``progress`` is the planner's
``JobProgress`` as JSON (``codec.progress_to_dict``); ``status`` repeats its status as a
column so lists and the queue filter without parsing JSON.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from changeover.control.db import Base


class PatchJob(Base):
    __tablename__ = "patch_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"))
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), index=True)
    method: Mapped[int] = mapped_column(Integer)
    spec: Mapped[str] = mapped_column(Text)
    """The submitted job, normalised, as JSON (names resolved to ids)."""
    comments: Mapped[str] = mapped_column(Text, default="")
    start_at: Mapped[float] = mapped_column(Float)
    """The scheduled start, or the creation time when none was given."""
    status: Mapped[int] = mapped_column(Integer, index=True)
    progress: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, default="")
    waiting_for: Mapped[str] = mapped_column(Text, default="[]")
    """Ids of the overlapping jobs this one waits for, as JSON."""
    wake_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Where its members stand, per state and region, as JSON (``fleet_view.summarize``):
    kept by the reconciler as it goes, so readers need not count the fleet. None until its
    first pass."""
    revision: Mapped[int] = mapped_column(Integer, default=0)
    """Bumped by every write of the reconciler: its compare-and-set token."""
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(200))


class PatchJobAction(Base):
    """One action a planner decided; recorded before it is applied, applied once."""

    __tablename__ = "patch_job_actions"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("patch_jobs.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(Text)
    """``codec.action_to_dict`` as JSON."""
    recorded_at: Mapped[float] = mapped_column(Float)
    applied_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    """NULL = recorded, not applied yet: the reconciler replays these (indexed for that)."""
    result: Mapped[str | None] = mapped_column(Text, nullable=True)


class PatchJobEvent(Base):
    """Something worth telling: reports and webhooks deliver these in ``id`` order."""

    __tablename__ = "patch_job_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("patch_jobs.id"), index=True)
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    """created, updated, status, phase, action, cancel, resume, check, finished."""
    status: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[str] = mapped_column(Text, default="{}")
    mailed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    hooked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    retry_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    """When the notifier may try again; set on each claim, so it is also the claim's lease."""


class PatchJobEmail(Base):
    __tablename__ = "patch_job_emails"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("patch_jobs.id"), index=True)
    email: Mapped[str] = mapped_column(String(254))
    progress_report: Mapped[bool] = mapped_column(Boolean)
    result_report: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[float] = mapped_column(Float)
    changed_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class AllocationWeight(Base):
    """How much of a fleet's new players a profile gets; no rows = allocate as before."""

    __tablename__ = "allocation_weights"

    fleet_id: Mapped[int] = mapped_column(ForeignKey("fleets.id"), primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id"), primary_key=True)
    weight: Mapped[float] = mapped_column(Float)
    """0 = no new players (friends of players already there may still join)."""
    updated_at: Mapped[float] = mapped_column(Float)


class HostStageRequest(Base):
    """A job asks a host to stage a profile's build beside what it runs (pre-stage).

    ``hosts.snapshot`` lists the build among the host's versions while the job is not
    over; the agent reports it staged at its next syncs.
    """

    __tablename__ = "host_stage_requests"

    job_id: Mapped[int] = mapped_column(ForeignKey("patch_jobs.id"), primary_key=True)
    host_name: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id"), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)


__all__ = [
    "AllocationWeight",
    "HostStageRequest",
    "PatchJob",
    "PatchJobAction",
    "PatchJobEmail",
    "PatchJobEvent",
]
