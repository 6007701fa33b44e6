"""The three build jobs: check an update's uploads, analyse a diff, publish a version.

Each task is idempotent: it may run again after a crash and must then do nothing twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from sqlalchemy import ColumnElement, exists, select

from changeover.content.delivery import DeliveryIndex, build_index
from changeover.content.diff import analyse
from changeover.content.manifest import Manifest
from changeover.content.patch_choice import Calibration, PublishBudget
from changeover.content.plan import upgrade_download_bytes
from changeover.content.publish import DEFAULT_HISTORY, build_patches
from changeover.content.store import LocalStore
from changeover.control.builds import services
from changeover.control.builds.models import Diff, Update, Version
from changeover.control.db import Database, now
from changeover.control.jobs import JobKind
from changeover.control.states import JobState
from changeover.errors import ChangeoverError


def _complete(
    db: Database, model: type[Update | Diff | Version], job_id: int, **values: object
) -> None:
    with db.write() as s:
        row = s.get_one(model, job_id)
        if row.status != JobState.RUNNING:
            return
        for k, v in values.items():
            setattr(row, k, v)
        row.status = JobState.COMPLETED
        row.updated_at = now()


def _previous_manifests(db: Database, store: LocalStore, version: Version) -> list[Manifest]:
    """The image's latest completed versions before this one, most recent first."""
    with db.read() as s:
        ids = s.scalars(
            select(Version.manifest_id)
            .where(
                Version.image_id == version.image_id,
                Version.status == JobState.COMPLETED,
                Version.manifest_id != version.manifest_id,
            )
            .order_by(Version.number.desc())
            .limit(DEFAULT_HISTORY)
        )
        return [store.get_manifest(i) for i in ids]


def _versions_created() -> ColumnElement[bool]:
    """Whether a version job waits to be queued (``services.queue_created_versions``)."""
    return exists().where(Version.status == JobState.CREATED)


def build_job_kinds(
    db: Database,
    store: LocalStore,
    on_version: Callable[[], object],
    budget: PublishBudget | None = None,
    calibration: Calibration | None = None,
) -> list[JobKind]:
    """The job kinds of the builds domain; ``on_version`` runs after a version is made,
    whose patches are built within ``budget``, scaled to this machine by ``calibration``
    (what earlier publishes took, see ``patch_choice.Calibration``)."""

    def check_update(job_id: int) -> None:
        with db.read() as s:
            row = s.get_one(Update, job_id)
        manifest = store.get_manifest(row.manifest_id)
        missing = store.missing(manifest.blob_hashes())
        if missing:
            shown = ", ".join(m[:12] for m in missing[:5])
            raise ChangeoverError(
                f"{len(missing)} file(s) of the build were never uploaded ({shown}…);"
                " push the build again to upload them, then retry"
            )
        for f in manifest:
            if f.link is None and store.raw_size(f.sha256) != f.size:
                raise ChangeoverError(
                    f"{f.path}: the manifest says {f.size} bytes but its content has"
                    f" {store.raw_size(f.sha256)}; the build changed during the push or the"
                    " manifest lies — push again"
                )
        _complete(db, Update, job_id)

    def analyse_diff(job_id: int) -> None:
        with db.read() as s:
            diff = s.get_one(Diff, job_id)
            upd = s.get_one(Update, diff.update_id)
            base = s.get(Version, diff.base_version_id) if diff.base_version_id else None
        new = store.get_manifest(upd.manifest_id)
        old = store.get_manifest(base.manifest_id) if base is not None else None
        have = old.blob_hashes() if old is not None else set()
        missing = store.missing(new.blob_hashes())
        if missing:
            raise ChangeoverError(
                f"the store lacks {len(missing)} blob(s) of update {upd.id}; push it again"
            )
        sizes = {h: store.stored_size(h) for h in new.blob_hashes() - have}
        report = analyse(old, new, sizes).to_dict()
        report["base_version"] = base.number if base is not None else None
        _complete(db, Diff, job_id, report=json.dumps(report))

    def diffs_waiting() -> ColumnElement[bool]:
        return exists().where(Diff.status == JobState.PENDING)

    def promote_diffs() -> None:
        with db.write() as s:
            services.promote_pending_diffs(s)

    def queue_versions() -> None:
        with db.write() as s:
            services.queue_created_versions(s)

    def publish_version(job_id: int) -> None:
        with db.read() as s:
            version = s.get_one(Version, job_id)
        manifest = store.get_manifest(version.manifest_id)
        missing = store.missing(manifest.blob_hashes())
        if missing:
            raise ChangeoverError(f"cannot publish: the store lacks {len(missing)} blob(s)")
        patches = build_patches(
            store,
            manifest,
            _previous_manifests(db, store, version),
            workers=_workers(manifest),
            budget=budget,
            calibration=calibration,
        )
        index = build_index(store, manifest, patches)
        store.put_private(f"delivery/{manifest.id}.json", index.to_bytes())
        _record_download(db, store, version, index)
        with db.write() as s:
            version = s.get_one(Version, job_id)
            if version.status == JobState.RUNNING:
                services.finish_version(s, version)
        on_version()

    return [
        JobKind("update", Update, check_update),
        JobKind("diff", Diff, analyse_diff, promote=promote_diffs, waiting=diffs_waiting),
        JobKind(
            "version", Version, publish_version, promote=queue_versions, waiting=_versions_created
        ),
    ]


def _record_download(
    db: Database, store: LocalStore, version: Version, index: DeliveryIndex
) -> None:
    """Write into the version's diff analysis what a host on the diff's base version will
    really download, now that the patches exist (the analysis could only count whole
    files). Idempotent: a replayed job computes and writes the same number."""
    with db.read() as s:
        diff = s.get(Diff, version.diff_id) if version.diff_id is not None else None
        if diff is None or not diff.report:
            return
        base = s.get(Version, diff.base_version_id) if diff.base_version_id else None
        diff_id = diff.id
    old = store.get_manifest(base.manifest_id) if base is not None else None
    new = store.get_manifest(version.manifest_id)
    planned = upgrade_download_bytes(old, new, index.patches, index.blobs)
    with db.write() as s:
        row = s.get_one(Diff, diff_id)
        report = json.loads(row.report or "{}")
        report["published_download_bytes"] = planned
        row.report = json.dumps(report)


SMALL_CHANGE_BYTES = 32 << 20


def _workers(manifest: Manifest) -> int:
    # Starting a process pool costs about a second; small builds patch faster in-process.
    return 1 if manifest.total_bytes < SMALL_CHANGE_BYTES else (os.cpu_count() or 1)
