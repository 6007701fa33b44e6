"""Tables of the builds domain: images, updates, trials, diff analyses, versions, branches.

Updates, diffs and versions are also jobs (see ``control.jobs``): each row carries its
job state, error and lease.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from changeover.control.db import Base


class JobColumns:
    status: Mapped[int] = mapped_column(Integer, index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(200))


class Image(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    # Plain integers, not foreign keys, where a key would close a cycle between tables.
    current_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    locked_by_diff_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The outstanding diff analysis; set and cleared by compare-and-set updates."""
    require_trial: Mapped[bool] = mapped_column(Boolean, server_default=false())
    """A diff analysis of an update needs a passed trial of it (``Trial``) first."""


class Update(JobColumns, Base):
    """An uploaded candidate build (Image Create Update)."""

    __tablename__ = "updates"

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    label: Mapped[str | None] = mapped_column(String(100), nullable=True)
    manifest_id: Mapped[str] = mapped_column(String(64))
    file_count: Mapped[int] = mapped_column(Integer)
    total_bytes: Mapped[int] = mapped_column(BigInteger)


class Trial(JobColumns, Base):
    """An update run on a build machine before its diff (seed 000, step 1): one instance
    of the update's build, with a profile's run spec, on a host of a fleet, until it has
    been ready for ``hold_s`` (passed) or crashed, failed or never got ready (failed).
    Run by ``control.fleet.trials``."""

    __tablename__ = "trials"

    id: Mapped[int] = mapped_column(primary_key=True)
    update_id: Mapped[int] = mapped_column(ForeignKey("updates.id"), index=True)
    fleet_id: Mapped[int] = mapped_column(ForeignKey("fleets.id"))
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id"))
    host_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The host asked for; None: any live host of the fleet."""
    instance_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hold_s: Mapped[float] = mapped_column(Float)
    ready_timeout_s: Mapped[float] = mapped_column(Float)
    result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """passed or failed, once over."""
    message: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    wake_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Diff(JobColumns, Base):
    """A diff analysis of an update against the image's current version."""

    __tablename__ = "diffs"

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    update_id: Mapped[int] = mapped_column(ForeignKey("updates.id"))
    base_version_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id"), nullable=True)
    decision: Mapped[str] = mapped_column(String(20), default="open")
    """open, accepted or rejected."""
    report: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The analysis as JSON, once completed."""


class Version(JobColumns, Base):
    """An accepted, immutable build (Image Version Create); usable once Completed."""

    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("image_id", "number", name="uq_versions_number"),
        UniqueConstraint("image_id", "label", name="uq_versions_label"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(100), nullable=True)
    manifest_id: Mapped[str] = mapped_column(String(64))
    diff_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    file_count: Mapped[int] = mapped_column(Integer)
    total_bytes: Mapped[int] = mapped_column(BigInteger)


class Branch(Base):
    __tablename__ = "branches"
    __table_args__ = (UniqueConstraint("image_id", "name", name="uq_branches_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"))
    updated_at: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(200))


class BranchEvent(Base):
    """Every change of a branch: who moved it, when, from which version to which."""

    __tablename__ = "branch_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    branch_id: Mapped[int] = mapped_column(ForeignKey("branches.id"), index=True)
    from_version_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id"), nullable=True)
    to_version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[float] = mapped_column(Float)
