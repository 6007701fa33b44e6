"""Pushing a build: scan, ask the server what it lacks, upload only that, resumably.

The server answers the manifest with the contents it lacks, where each one's upload
stands (a push cut short earlier left a part of it), and how big a batch it accepts.
Small files that have not started are sent many to a request
(``POST /api/v1/uploads/batch``); every other file is one resumable stream
(``PUT /api/v1/uploads/{sha256}?offset=&size=``) that continues from where the server
stands. Both kinds run on a few threads at once, the biggest first. Files the server
already has, from any image or version, are never sent again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from changeover.client import ApiClient
from changeover.content.manifest import Manifest
from changeover.content.scan import scan
from changeover.errors import Conflict, InvalidInput, RemoteError

CHUNK = 1 << 20
UPLOAD_THREADS = 4
BATCH_FILE_MAX = 1 << 20
"""Files up to this size go in batches; bigger ones are streamed, resumably, on their own."""
BATCH_BYTES = 8 << 20
BATCH_FILES = 256
"""A batch is cut at this many bytes or files (or the server's limits, if lower)."""
CONFLICT_RETRIES = 4

Progress = Callable[[int], None]


@dataclass
class PushResult:
    update: dict[str, Any]
    manifest: Manifest
    uploaded_files: int
    uploaded_bytes: int


@dataclass
class _Job:
    """One request's worth of uploading: a batch of small files, or one file."""

    items: list[dict[str, Any]] = field(default_factory=list)
    batch: bool = False

    @property
    def size(self) -> int:
        return sum(int(m["size"]) for m in self.items)


def plan(missing: list[dict[str, Any]], limits: dict[str, int] | None) -> list[_Job]:
    """Group what is missing into requests, biggest first.

    Without ``limits`` (a server that takes no batches) every file is a request of its own;
    so is a file whose upload has already started, as only a stream can resume it.
    """
    jobs: list[_Job] = []
    batch = _Job(batch=True)
    max_bytes = min(BATCH_BYTES, limits["bytes"]) if limits else 0
    max_files = min(BATCH_FILES, limits["files"]) if limits else 0
    for m in missing:
        size = int(m["size"])
        if not limits or m.get("offset") != 0 or size > min(BATCH_FILE_MAX, max_bytes):
            jobs.append(_Job([m]))
            continue
        if batch.items and (batch.size + size > max_bytes or len(batch.items) >= max_files):
            jobs.append(batch)
            batch = _Job(batch=True)
        batch.items.append(m)
    if batch.items:
        jobs.append(batch)
    # Longest first: the big files start at once, and the small requests fill in around them.
    jobs.sort(key=lambda j: j.size, reverse=True)
    return jobs


def _read_from(path: Path, offset: int, reached: Progress) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(CHUNK):
            offset += len(chunk)
            reached(offset)
            yield chunk


class _Uploader:
    """Sends the jobs of one push; ``advance`` moves the caller's progress bar."""

    def __init__(self, client: ApiClient, path_of: dict[str, Path], on_upload: Progress | None):
        self.client, self.path_of, self.on_upload = client, path_of, on_upload

    def advance(self, n: int) -> None:
        if self.on_upload is not None and n > 0:
            self.on_upload(n)

    def run(self, job: _Job) -> int:
        """Bytes sent for ``job``."""
        return self.send_batch(job.items) if job.batch else self.send_file(job.items[0])

    def send_batch(self, items: list[dict[str, Any]]) -> int:
        files = []
        for m in items:
            data = self.path_of[m["sha256"]].read_bytes()
            if len(data) != m["size"]:
                raise _changed([self.path_of[m["sha256"]]])
            files.append((m["sha256"], data))
        results = self.client.upload_batch(files)
        refused = [self.path_of[r["sha256"]] for r in results if not r["complete"]]
        if refused:
            raise _changed(refused)
        size = sum(len(data) for _, data in files)
        self.advance(size)
        return size

    def send_file(self, item: dict[str, Any]) -> int:
        sha, size = item["sha256"], int(item["size"])
        offset: int | None = item.get("offset")  # None from a server that does not say
        counted = 0  # bytes of this file shown as uploaded

        def reached(position: int) -> None:
            nonlocal counted
            self.advance(position - counted)
            counted = max(counted, position)

        if offset is None:
            state = self.client.upload_status(sha)
            if state["complete"]:
                reached(size)
                return 0
            offset = int(state["offset"])
        for attempt in range(CONFLICT_RETRIES):
            reached(offset)
            try:
                body = _read_from(self.path_of[sha], offset, reached)
                state = self.client.upload(sha, offset, size, body)
            except InvalidInput as e:
                # 422: other bytes than scanned; 400: more bytes than scanned.
                if e.facts.get("status") in (400, 422):
                    raise _changed([self.path_of[sha]]) from e
                raise
            except (Conflict, RemoteError):
                # Another push moved this upload on, or is sending it right now (409); or
                # the server went away mid-stream (another replica answers the next
                # request): carry on from where the upload stands; if it did not move,
                # give the other writer a moment.
                if attempt == CONFLICT_RETRIES - 1:
                    raise
                state = self.client.upload_status(sha)
                if state["complete"]:
                    reached(size)
                    return 0
                if int(state["offset"]) == offset:
                    time.sleep(0.25 * 2**attempt)  # a backoff, not a wait for a known event
                offset = int(state["offset"])
                continue
            if not state["complete"]:  # fewer bytes than scanned: the file shrank since
                raise _changed([self.path_of[sha]])
            return size - offset
        raise AssertionError("unreachable")  # pragma: no cover


def push(
    client: ApiClient,
    root: Path,
    image: str,
    label: str | None,
    *,
    on_scan: Progress | None = None,
    on_plan: Callable[[int, int], None] | None = None,
    on_upload: Progress | None = None,
    user_data: Sequence[str] = (),
) -> PushResult:
    """Upload the build at ``root`` as an update of ``image``; returns the update.

    Raises:
        InvalidInput: the build cannot be shipped (see ``content.scan``), or a file changed
            while it was being pushed.
        ChangeoverError: whatever the server refuses (unknown image, duplicate label …).
    """
    manifest = scan(root, on_scan)
    if user_data:  # the player's paths, signed with the build (content.user_data)
        manifest = Manifest.of(manifest.files, user_data)
    created = client.post(
        f"/images/{image}/updates", json={"label": label, "manifest": manifest.to_dict()}
    )
    missing: list[dict[str, Any]] = created["missing"]
    if on_plan is not None:
        on_plan(len(missing), sum(m["size"] for m in missing))
    path_of = {f.sha256: root / f.path for f in manifest if f.link is None}
    uploader = _Uploader(client, path_of, on_upload)
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        jobs = plan(missing, created.get("batch_limits"))
        futures = [pool.submit(uploader.run, job) for job in jobs]
        wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            f.cancel()  # after a failure nothing new starts; the running ones end
        sent = sum(f.result() for f in futures if not f.cancelled())
    update = client.post(f"/updates/{created['id']}/complete")
    return PushResult(update, manifest, len(missing), sent)


def _changed(paths: list[Path]) -> InvalidInput:
    names = ", ".join(str(p) for p in sorted(paths)[:5]) + (" …" if len(paths) > 5 else "")
    return InvalidInput(
        f"{len(paths)} file(s) changed while the build was pushed ({names}): the server"
        " refused content that does not match the scan; push again once the build is stable",
        paths=[str(p) for p in paths],
    )
