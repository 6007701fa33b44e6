"""Pushing a build: scan, ask the server what it lacks, upload only that, resumably.

Each file is uploaded as one resumable stream: the server keeps what arrived, and a later
push (after a kill, a lost connection) asks where each upload stands and continues from
there. Files the server already has, from any image or version, are never sent again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from changeover.client import ApiClient
from changeover.content.manifest import Manifest
from changeover.content.scan import scan

CHUNK = 1 << 20
UPLOAD_THREADS = 4

Progress = Callable[[int], None]


@dataclass
class PushResult:
    update: dict[str, Any]
    manifest: Manifest
    uploaded_files: int
    uploaded_bytes: int


def _read_from(path: Path, offset: int, progress: Progress | None) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(CHUNK):
            if progress is not None:
                progress(len(chunk))
            yield chunk


def push(
    client: ApiClient,
    root: Path,
    image: str,
    label: str | None,
    *,
    on_scan: Progress | None = None,
    on_plan: Callable[[int, int], None] | None = None,
    on_upload: Progress | None = None,
) -> PushResult:
    """Upload the build at ``root`` as an update of ``image``; returns the update.

    Raises:
        InvalidInput: the build cannot be shipped (see ``content.scan``).
        ChangeoverError: whatever the server refuses (unknown image, duplicate label …).
    """
    manifest = scan(root, on_scan)
    created = client.post(
        f"/images/{image}/updates", json={"label": label, "manifest": manifest.to_dict()}
    )
    missing = created["missing"]
    path_of = {f.sha256: root / f.path for f in manifest if f.link is None}
    total = sum(m["size"] for m in missing)
    if on_plan is not None:
        on_plan(len(missing), total)

    def send(item: dict[str, Any]) -> int:
        sha, size = item["sha256"], item["size"]
        state = client.get(f"/uploads/{sha}")
        if state["complete"]:
            if on_upload is not None:
                on_upload(size)
            return 0
        offset = state["offset"]
        if on_upload is not None and offset:
            on_upload(offset)
        client.upload(sha, offset, size, _read_from(path_of[sha], offset, on_upload))
        return size - offset

    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        sent = sum(pool.map(send, missing))
    update = client.post(f"/updates/{created['id']}/complete")
    return PushResult(update, manifest, len(missing), sent)
