"""The rules of the builds domain: images, updates, diff analyses, versions, branches.

Functions take an open session and plain values and raise our errors; the HTTP views and
the job tasks call them. Seed 000's flow: an update is uploaded; a diff analysis compares it
with the image's current version and locks the image until it is rejected or accepted;
accepting creates a version (a job); when that job completes the version becomes current
and the lock is released.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from changeover.content.manifest import Manifest
from changeover.content.store import LocalStore
from changeover.control.builds.models import (
    Branch,
    BranchEvent,
    Diff,
    Image,
    Trial,
    Update,
    Version,
)
from changeover.control.db import now
from changeover.control.news import services as news
from changeover.control.states import JobState, state_dict
from changeover.errors import Conflict, ImageLocked, InvalidInput, NotFound

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise InvalidInput(
            f"{what} {value!r} is not valid: use 1-63 lowercase letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return value


def check_label(label: str | None) -> str | None:
    if label is None:
        return None
    if not LABEL_RE.match(label) or label == "latest" or label.isdigit():
        raise InvalidInput(
            f"label {label!r} is not valid: use up to 100 letters, digits, '.', '_', '+' or '-',"
            " not a bare number and not 'latest'"
        )
    return label


# -- images --------------------------------------------------------------------------------


def create_image(s: Session, name: str, description: str = "") -> Image:
    check_name(name, "image name")
    if len(description) > 2000:
        raise InvalidInput("an image description is at most 2000 characters")
    if s.scalar(select(Image.id).where(Image.name == name)) is not None:
        raise Conflict(f"image {name} already exists", image=name)
    image = Image(name=name, description=description, created_at=now())
    s.add(image)
    s.flush()
    return image


def get_image(s: Session, name: str) -> Image:
    image = s.scalar(select(Image).where(Image.name == name))
    if image is None:
        raise NotFound(f"no image named {name!r}; create it with 'changeover image create'")
    return image


def list_images(s: Session) -> list[Image]:
    return list(s.scalars(select(Image).order_by(Image.name)))


# -- updates -------------------------------------------------------------------------------


def create_update(
    s: Session, store: LocalStore, image: Image, manifest: Manifest, label: str | None, actor: str
) -> tuple[Update, list[dict[str, Any]]]:
    """Register an update; returns it and the blobs the store still lacks.

    Pushing the same build again resumes the open update instead of making a new one.
    """
    check_label(label)
    if label is not None:
        _check_label_free(s, image, label)
    store.put_manifest(manifest)
    sizes = {f.sha256: f.size for f in manifest if f.link is None}
    missing = [{"sha256": h, "size": sizes[h]} for h in store.missing(sizes)]
    existing = s.scalar(
        select(Update).where(
            Update.image_id == image.id,
            Update.manifest_id == manifest.id,
            Update.status.in_([JobState.PENDING, JobState.QUEUED, JobState.FAILED]),
            (Update.label == label) if label is not None else Update.label.is_(None),
        )
    )
    if existing is not None:
        return existing, missing
    row = Update(
        image_id=image.id,
        label=label,
        manifest_id=manifest.id,
        file_count=len(manifest),
        total_bytes=manifest.total_bytes,
        status=JobState.PENDING,
        created_at=now(),
        updated_at=now(),
        created_by=actor,
    )
    s.add(row)
    s.flush()
    return row, missing


def _check_label_free(s: Session, image: Image, label: str) -> None:
    taken = s.scalar(select(Version).where(Version.image_id == image.id, Version.label == label))
    if taken is not None:
        raise Conflict(
            f"label {label} is already version {taken.number} of image {image.name};"
            " labels are unique per image",
            label=label,
            version=taken.number,
        )


def get_update(s: Session, update_id: int) -> Update:
    row = s.get(Update, update_id)
    if row is None:
        raise NotFound(f"no update with id {update_id}")
    return row


def complete_update(s: Session, row: Update) -> Update:
    """The client says every blob is uploaded: queue the check."""
    if row.status == JobState.PENDING:
        row.status = JobState.QUEUED
        row.updated_at = now()
    return row


def retry(row: Update | Diff | Version, what: str) -> None:
    if row.status != JobState.FAILED:
        raise Conflict(
            f"{what} {row.id} is {JobState(row.status).label}; only a failed job can be retried"
        )
    row.status = JobState.QUEUED
    row.error = None
    row.updated_at = now()


# -- diff analyses -------------------------------------------------------------------------


def create_diff(s: Session, image: Image, update_id: int, actor: str) -> Diff:
    """Start a diff analysis of an update; locks the image until it is decided.

    Raises:
        ImageLocked: another diff of this image is outstanding.
        NotFound / InvalidInput: the update is unknown or belongs to another image.
        Conflict: the image requires a passed build machine trial and the update has none.
    """
    upd = get_update(s, update_id)
    if upd.image_id != image.id:
        raise InvalidInput(f"update {update_id} belongs to another image, not {image.name}")
    if image.require_trial:
        _check_trial_passed(s, image, upd)
    if image.locked_by_diff_id is not None:
        raise ImageLocked(image.name, image.locked_by_diff_id)
    diff = Diff(
        image_id=image.id,
        update_id=upd.id,
        base_version_id=image.current_version_id,
        decision="open",
        status=JobState.CREATED,
        created_at=now(),
        updated_at=now(),
        created_by=actor,
    )
    s.add(diff)
    s.flush()
    # Compare-and-set: of two concurrent requests, exactly one takes the lock.
    took = s.execute(
        update(Image)
        .where(Image.id == image.id, Image.locked_by_diff_id.is_(None))
        .values(locked_by_diff_id=diff.id)
    ).rowcount
    if not took:
        s.rollback()
        s.refresh(image)
        raise ImageLocked(image.name, image.locked_by_diff_id or 0)
    diff.status = JobState.PENDING
    return diff


def latest_trial(s: Session, update_id: int) -> Trial | None:
    """The update's latest build machine trial (``fleet.trials``), if any."""
    return s.scalar(
        select(Trial).where(Trial.update_id == update_id).order_by(Trial.id.desc()).limit(1)
    )


def _check_trial_passed(s: Session, image: Image, upd: Update) -> None:
    last = latest_trial(s, upd.id)
    if last is not None and last.result == "passed":
        return
    state = (
        "has never been tried"
        if last is None
        else f"did not pass its last trial ({last.id}: {last.result or 'still running'})"
    )
    raise Conflict(
        f"image {image.name} requires a passed build machine trial before a diff, and update"
        f" {upd.id} {state}; run one with `changeover update trial {upd.id} --fleet FLEET`",
        update_id=upd.id,
    )


def set_require_trial(image: Image, required: bool) -> Image:
    image.require_trial = required
    return image


def get_diff(s: Session, diff_id: int) -> Diff:
    row = s.get(Diff, diff_id)
    if row is None:
        raise NotFound(f"no diff analysis with id {diff_id}")
    return row


def promote_pending_diffs(s: Session) -> None:
    """Queue the diffs whose update is ready; fail those whose update failed."""
    for diff, upd in s.execute(
        select(Diff, Update)
        .join(Update, Diff.update_id == Update.id)
        .where(Diff.status == JobState.PENDING)
    ):
        if upd.status == JobState.COMPLETED:
            diff.status = JobState.QUEUED
        elif upd.status == JobState.FAILED:
            diff.status = JobState.FAILED
            diff.error = f"update {upd.id} failed: {upd.error}; retry the update, then this diff"
        else:
            continue
        diff.updated_at = now()


def retry_diff(s: Session, diff: Diff) -> None:
    if diff.decision != "open":
        raise Conflict(f"diff {diff.id} was {diff.decision}; it cannot be retried")
    retry(diff, "diff")
    upd = get_update(s, diff.update_id)
    if upd.status != JobState.COMPLETED:
        diff.status = JobState.PENDING


def reject_diff(s: Session, diff: Diff) -> Diff:
    if diff.decision != "open":
        raise Conflict(f"diff {diff.id} was already {diff.decision}")
    diff.decision = "rejected"
    diff.updated_at = now()
    _unlock(s, diff)
    return diff


def _unlock(s: Session, diff: Diff) -> None:
    s.execute(
        update(Image)
        .where(Image.id == diff.image_id, Image.locked_by_diff_id == diff.id)
        .values(locked_by_diff_id=None)
    )


def accept_diff(s: Session, diff: Diff, actor: str) -> Version:
    """Image Version Create: accept a completed analysis and create the version job, in
    state Created; the job runner queues it (``queue_created_versions``)."""
    if diff.decision != "open":
        raise Conflict(f"diff {diff.id} was already {diff.decision}")
    if diff.status != JobState.COMPLETED:
        raise Conflict(
            f"diff {diff.id} is {JobState(diff.status).label}; only a completed analysis"
            " can be accepted"
        )
    upd = get_update(s, diff.update_id)
    image = s.get_one(Image, diff.image_id)
    if upd.label is not None:
        _check_label_free(s, image, upd.label)
    number = (
        s.scalar(select(func.max(Version.number)).where(Version.image_id == image.id)) or 0
    ) + 1
    version = Version(
        image_id=image.id,
        number=number,
        label=upd.label,
        manifest_id=upd.manifest_id,
        diff_id=diff.id,
        file_count=upd.file_count,
        total_bytes=upd.total_bytes,
        status=JobState.CREATED,
        created_at=now(),
        updated_at=now(),
        created_by=actor,
    )
    s.add(version)
    diff.decision = "accepted"
    diff.updated_at = now()
    s.flush()
    return version


def queue_created_versions(s: Session) -> None:
    """Queue the version jobs ``accept_diff`` created (1 Created -> 3 Queued): the job
    runner does it on its next pass, so the answer to an accept, and any read before that
    pass, shows a new job as seed 000's Image Version Status does, Created."""
    s.execute(
        update(Version)
        .where(Version.status == JobState.CREATED)
        .values(status=JobState.QUEUED, updated_at=now())
    )


def finish_version(s: Session, version: Version) -> None:
    """The version is published: make it current and release the image."""
    version.status = JobState.COMPLETED
    version.updated_at = now()
    image = s.get_one(Image, version.image_id)
    image.current_version_id = version.id
    if version.diff_id is not None and image.locked_by_diff_id == version.diff_id:
        image.locked_by_diff_id = None


# -- versions and branches -----------------------------------------------------------------


def resolve_version(s: Session, image: Image, ref: str) -> Version:
    """A version of ``image`` by number, label, manifest id or ``latest``."""
    q = select(Version).where(Version.image_id == image.id)
    if ref == "latest":
        row = s.scalar(
            q.where(Version.status == JobState.COMPLETED).order_by(Version.number.desc()).limit(1)
        )
    elif re.fullmatch(r"[0-9]{1,18}", ref):  # ASCII only: str.isdigit() also takes "²"
        row = s.scalar(q.where(Version.number == int(ref)))
    elif re.fullmatch(r"[0-9a-f]{64}", ref):
        row = s.scalar(q.where(Version.manifest_id == ref).order_by(Version.number.desc()).limit(1))
    else:
        row = s.scalar(q.where(Version.label == ref))
    if row is None:
        raise NotFound(f"image {image.name} has no version {ref!r}")
    return row


def get_version(s: Session, version_id: int) -> Version:
    row = s.get(Version, version_id)
    if row is None:
        raise NotFound(f"no version with id {version_id}")
    return row


def list_versions(s: Session, image: Image) -> list[Version]:
    return list(
        s.scalars(select(Version).where(Version.image_id == image.id).order_by(Version.number))
    )


def set_branch(s: Session, image: Image, name: str, ref: str, actor: str) -> Branch:
    check_name(name, "branch name")
    version = resolve_version(s, image, ref)
    if version.status != JobState.COMPLETED:
        raise Conflict(
            f"version {version.number} of {image.name} is {JobState(version.status).label};"
            " a branch can only point at a completed version"
        )
    branch = s.scalar(select(Branch).where(Branch.image_id == image.id, Branch.name == name))
    before = branch.version_id if branch is not None else None
    if branch is None:
        branch = Branch(image_id=image.id, name=name, version_id=version.id)
        s.add(branch)
    elif before == version.id:
        return branch
    branch.version_id = version.id
    branch.updated_at = now()
    branch.updated_by = actor
    s.flush()
    s.add(
        BranchEvent(
            branch_id=branch.id,
            from_version_id=before,
            to_version_id=version.id,
            actor=actor,
            at=now(),
        )
    )
    # In the same transaction: the release entry exists exactly when the move does.
    news.branch_moved(s, image, name, version, actor)
    return branch


def list_branches(s: Session, image: Image) -> list[Branch]:
    return list(s.scalars(select(Branch).where(Branch.image_id == image.id).order_by(Branch.name)))


def get_branch(s: Session, image: Image, name: str) -> Branch:
    branch = s.scalar(select(Branch).where(Branch.image_id == image.id, Branch.name == name))
    if branch is None:
        raise NotFound(f"image {image.name} has no branch {name!r}")
    return branch


def branch_history(s: Session, branch: Branch) -> list[BranchEvent]:
    return list(
        s.scalars(
            select(BranchEvent).where(BranchEvent.branch_id == branch.id).order_by(BranchEvent.id)
        )
    )


def diff_report(diff: Diff) -> dict[str, Any] | None:
    return json.loads(diff.report) if diff.report else None


def job_fields(row: Update | Diff | Version) -> dict[str, Any]:
    return {
        "id": row.id,
        **state_dict(row.status),
        "error": row.error,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "created_by": row.created_by,
    }
