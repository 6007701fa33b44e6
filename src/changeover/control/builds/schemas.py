"""The answers of the builds endpoints (``views``): images, updates, uploads, diffs,
versions, branches."""

from __future__ import annotations

from changeover.control.http_output import Out


class ImageOut(Out):
    id: int
    name: str
    description: str
    created_at: float
    current_version: int | None
    locked_by_diff: int | None
    require_trial: bool
    """A diff of an update needs a passed build machine trial of it first."""


class BuildJobOut(Out):
    """What every build job (update, diff, version) shows of its progress."""

    id: int
    status: int
    status_name: str
    error: str | None
    created_at: float
    updated_at: float
    created_by: str


class TrialBrief(Out):
    id: int
    status: int
    status_name: str
    result: str | None
    """passed or failed, once over."""
    message: str


class UpdateOut(BuildJobOut):
    image_id: int
    label: str | None
    manifest_id: str
    file_count: int
    total_bytes: int
    trial: TrialBrief | None
    """Its latest build machine trial (``POST /updates/{id}/trials``), if any."""


class MissingFile(Out):
    sha256: str
    size: int
    offset: int
    """Where its upload stands: resume from here."""


class BatchLimits(Out):
    bytes: int
    files: int


class UpdateCreated(UpdateOut):
    missing: list[MissingFile]
    batch_limits: BatchLimits


class UploadStatus(Out):
    sha256: str
    complete: bool
    offset: int


class BatchFileResult(Out):
    """One file of a batch; a refused one carries the error (integrity: what was expected
    and what arrived)."""

    sha256: str
    complete: bool
    error: str | None = None
    message: str | None = None
    what: str | None = None
    expected: str | None = None
    got: str | None = None


class BatchResult(Out):
    files: list[BatchFileResult]
    stored: int
    refused: int


class FilesBytes(Out):
    files: int
    bytes: int


class FileChange(Out):
    path: str
    change: str
    old_size: int | None
    new_size: int | None


class DiffReport(Out):
    totals: dict[str, FilesBytes]
    """Per kind of change (added, removed, changed, unchanged, …)."""
    old_bytes: int
    new_bytes: int
    download_bytes: int
    """Whole files the base version lacks: an upper bound."""
    published_download_bytes: int | None = None
    """What a host on the base version really fetches with the published patches; None
    until the version is published (older reports lack it)."""
    files: list[FileChange] | None = None
    """Left out when asked for without files (``?files=false``) and when created."""
    base_version: int | None = None
    """The version it was compared with (None: the image's first); older reports lack it."""


class DiffOut(BuildJobOut):
    image_id: int
    update_id: int
    decision: str
    report: DiffReport | None


class VersionOut(BuildJobOut):
    image_id: int
    number: int
    label: str | None
    manifest_id: str
    diff_id: int | None
    file_count: int
    total_bytes: int


class BranchOut(Out):
    name: str
    version: int
    label: str | None
    manifest_id: str
    updated_at: float
    updated_by: str


class BranchEventOut(Out):
    from_version: int | None
    to_version: int
    actor: str
    at: float
