"""Diff analysis: what an update changes against the version hosts already run.

A pure function of two manifests and the stored sizes of blobs, so the control plane's
diff job, the CLI preview and the tests all agree on the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from changeover.content.manifest import Manifest


class Change(StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class FileChange:
    path: str
    change: Change
    old_size: int | None
    new_size: int | None
    old_sha256: str | None
    new_sha256: str | None


@dataclass(frozen=True, slots=True)
class Totals:
    files: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class DiffReport:
    """Per-file changes, per-kind totals and the download a host on the old version faces."""

    changes: tuple[FileChange, ...]
    totals: dict[Change, Totals]
    old_bytes: int
    new_bytes: int
    download_bytes: int
    """Stored bytes of content the old version lacks (deduplicated by hash): whole files,
    an upper bound. Patches from the old version are built only when the update is
    accepted; what a host then really fetches is recorded with the version
    (``published_download_bytes``, ``None`` until then)."""

    def to_dict(self, include_unchanged: bool = True) -> dict[str, Any]:
        return {
            "totals": {
                k.value: {"files": v.files, "bytes": v.bytes} for k, v in self.totals.items()
            },
            "old_bytes": self.old_bytes,
            "new_bytes": self.new_bytes,
            "download_bytes": self.download_bytes,
            "published_download_bytes": None,
            "files": [
                {
                    "path": c.path,
                    "change": c.change.value,
                    "old_size": c.old_size,
                    "new_size": c.new_size,
                }
                for c in self.changes
                if include_unchanged or c.change is not Change.UNCHANGED
            ],
        }


def analyse(
    old: Manifest | None, new: Manifest, stored_size: Mapping[str, int] | None = None
) -> DiffReport:
    """Compare ``new`` against ``old`` (``None`` for an image's first version).

    ``stored_size`` maps a blob hash to the bytes a host downloads for it (compressed size);
    a hash missing from it counts at its raw size. Content the old version already holds
    under any path (a renamed file, a duplicate) costs nothing to download.
    """
    old_files = {f.path: f for f in old} if old is not None else {}
    have = old.blob_hashes() if old is not None else set()
    changes: list[FileChange] = []
    for f in new:
        before = old_files.get(f.path)
        if before is None:
            kind = Change.ADDED
        elif (before.sha256, before.mode, before.link) == (f.sha256, f.mode, f.link):
            kind = Change.UNCHANGED
        else:
            kind = Change.CHANGED
        changes.append(
            FileChange(
                f.path,
                kind,
                before.size if before else None,
                f.size,
                before.sha256 if before else None,
                f.sha256,
            )
        )
    new_paths = {f.path for f in new}
    for path, before in old_files.items():
        if path not in new_paths:
            changes.append(FileChange(path, Change.REMOVED, before.size, None, before.sha256, None))
    changes.sort(key=lambda c: c.path)

    counts: dict[Change, list[int]] = {k: [0, 0] for k in Change}
    for c in changes:
        counts[c.change][0] += 1
        counts[c.change][1] += (c.old_size if c.change is Change.REMOVED else c.new_size) or 0

    sizes = stored_size or {}
    needed = {f.sha256: f.size for f in new if f.link is None and f.sha256 not in have}
    download = sum(sizes.get(h, size) for h, size in needed.items())
    return DiffReport(
        changes=tuple(changes),
        totals={k: Totals(v[0], v[1]) for k, v in counts.items()},
        old_bytes=old.total_bytes if old is not None else 0,
        new_bytes=new.total_bytes,
        download_bytes=download,
    )
