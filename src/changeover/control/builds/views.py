"""HTTP endpoints of the builds domain (seed 000's Image / Update / Diff / Version calls)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect

from changeover.content.manifest import Manifest, check_sha256
from changeover.content.store import Upload
from changeover.control.auth.views import Admin, Pusher, Reader, ctx
from changeover.control.builds import services
from changeover.control.builds.models import Branch, BranchEvent, Diff, Image, Update, Version
from changeover.control.builds.schemas import (
    BatchResult,
    BranchEventOut,
    BranchOut,
    DiffOut,
    ImageOut,
    UpdateCreated,
    UpdateOut,
    UploadStatus,
    VersionOut,
)
from changeover.control.http_input import EdgeRoute, Id
from changeover.control.states import state_dict
from changeover.errors import InvalidInput

router = APIRouter(prefix="/api/v1", tags=["builds"], route_class=EdgeRoute)

UPLOAD_FLUSH_BYTES = 4 << 20
"""An upload's bytes are handed to a worker thread (hash, compress, write) this many at a
time, while the next ones are received."""
BATCH_MAX_BYTES = 16 << 20
"""File bytes in one ``POST /uploads/batch``; the whole body is held in memory."""
BATCH_MAX_FILES = 1024
BATCH_MAX_HEADER_BYTES = 256 << 10


class ImageCreate(BaseModel):
    name: str
    description: str = ""


class ImagePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    require_trial: bool


class UpdateCreate(BaseModel):
    label: str | None = None
    manifest: dict[str, Any]


class DiffCreate(BaseModel):
    update_id: Id


class BatchFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha256: str
    size: int = Field(ge=0, le=1 << 44)  # over BATCH_MAX_BYTES: 413, below


class BatchHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[BatchFile]


class BranchSet(BaseModel):
    version: str = Field(min_length=1, max_length=100)


def image_dict(s: Any, image: Image) -> dict[str, Any]:
    current = s.get(Version, image.current_version_id) if image.current_version_id else None
    return {
        "id": image.id,
        "name": image.name,
        "description": image.description,
        "created_at": image.created_at,
        "current_version": current.number if current else None,
        "locked_by_diff": image.locked_by_diff_id,
        "require_trial": image.require_trial,
    }


def update_dict(s: Any, row: Update) -> dict[str, Any]:
    trial = services.latest_trial(s, row.id)
    return {
        **services.job_fields(row),
        "image_id": row.image_id,
        "label": row.label,
        "manifest_id": row.manifest_id,
        "file_count": row.file_count,
        "total_bytes": row.total_bytes,
        "trial": None
        if trial is None
        else {
            "id": trial.id,
            **state_dict(trial.status),
            "result": trial.result,
            "message": trial.message,
        },
    }


def diff_dict(row: Diff, *, files: bool) -> dict[str, Any]:
    report = services.diff_report(row)
    if report is not None and not files:
        report.pop("files", None)
    return {
        **services.job_fields(row),
        "image_id": row.image_id,
        "update_id": row.update_id,
        "decision": row.decision,
        "report": report,
    }


def version_dict(row: Version) -> dict[str, Any]:
    return {
        **services.job_fields(row),
        "image_id": row.image_id,
        "number": row.number,
        "label": row.label,
        "manifest_id": row.manifest_id,
        "diff_id": row.diff_id,
        "file_count": row.file_count,
        "total_bytes": row.total_bytes,
    }


def branch_dict(s: Any, row: Branch) -> dict[str, Any]:
    v = s.get_one(Version, row.version_id)
    return {
        "name": row.name,
        "version": v.number,
        "label": v.label,
        "manifest_id": v.manifest_id,
        "updated_at": row.updated_at,
        "updated_by": row.updated_by,
    }


def event_dict(s: Any, e: BranchEvent) -> dict[str, Any]:
    before = s.get(Version, e.from_version_id) if e.from_version_id else None
    return {
        "from_version": before.number if before else None,
        "to_version": s.get_one(Version, e.to_version_id).number,
        "actor": e.actor,
        "at": e.at,
    }


# -- images --------------------------------------------------------------------------------


@router.post("/images", status_code=201, response_model=ImageOut)
def create_image(body: ImageCreate, request: Request, _: Admin) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        return image_dict(s, services.create_image(s, body.name, body.description))


@router.get("/images", response_model=list[ImageOut])
def list_images(request: Request, _: Reader) -> list[dict[str, Any]]:
    with ctx(request).db.read() as s:
        return [image_dict(s, i) for i in services.list_images(s)]


@router.get("/images/{name}", response_model=ImageOut)
def show_image(name: str, request: Request, _: Reader) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        return image_dict(s, services.get_image(s, name))


@router.patch("/images/{name}", response_model=ImageOut)
def patch_image(name: str, body: ImagePatch, request: Request, _: Admin) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        image = services.set_require_trial(services.get_image(s, name), body.require_trial)
        return image_dict(s, image)


# -- updates and uploads -------------------------------------------------------------------


@router.post("/images/{name}/updates", status_code=201, response_model=UpdateCreated)
def create_update(name: str, body: UpdateCreate, request: Request, who: Pusher) -> dict[str, Any]:
    c = ctx(request)
    manifest = Manifest.from_dict(body.manifest)
    if len(manifest) == 0:
        raise InvalidInput("the build has no files: there is nothing to ship")
    with c.db.write() as s:
        image = services.get_image(s, name)
        row, missing = services.create_update(s, c.store, image, manifest, body.label, who.actor)
        out = update_dict(s, row)
    # Where each upload stands, so that a client resumes without asking file by file, and
    # the batch limits, so that it sends small files together (POST /uploads/batch).
    for m in missing:
        m["offset"] = c.store.upload_offset(m["sha256"])
    return {
        **out,
        "missing": missing,
        "batch_limits": {"bytes": BATCH_MAX_BYTES, "files": BATCH_MAX_FILES},
    }


@router.get("/updates/{update_id}", response_model=UpdateOut)
def show_update(update_id: Id, request: Request, _: Reader) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        return update_dict(s, services.get_update(s, update_id))


@router.post("/updates/{update_id}/complete", response_model=UpdateOut)
def complete_update(update_id: Id, request: Request, _: Pusher) -> dict[str, Any]:
    c = ctx(request)
    with c.db.write() as s:
        row = services.complete_update(s, services.get_update(s, update_id))
        out = update_dict(s, row)
    c.runner.wake()
    return out


@router.post("/updates/{update_id}/retry", response_model=UpdateOut)
def retry_update(update_id: Id, request: Request, _: Pusher) -> dict[str, Any]:
    c = ctx(request)
    with c.db.write() as s:
        row = services.get_update(s, update_id)
        services.retry(row, "update")
        out = update_dict(s, row)
    c.runner.wake()
    return out


@router.get("/uploads/{sha256}", response_model=UploadStatus)
def upload_status(sha256: str, request: Request, _: Pusher) -> dict[str, Any]:
    store = ctx(request).store
    check_sha256(sha256)
    return {"sha256": sha256, "complete": store.has(sha256), "offset": store.upload_offset(sha256)}


@router.put("/uploads/{sha256}", response_model=UploadStatus)
async def upload(
    sha256: str,
    request: Request,
    _: Pusher,
    offset: int = Query(ge=0, le=1 << 44),
    size: int = Query(ge=0, le=1 << 44),
) -> dict[str, Any]:
    """Append the request body at ``offset`` to the upload of file ``sha256`` (``size`` bytes).

    A request cut off midway keeps what arrived; ``GET /uploads/{sha256}`` tells where to
    resume. The last byte triggers verification and storage as a blob. An upload from byte
    0 is hashed and compressed while it arrives, so its last byte costs only an fsync.
    """
    store = ctx(request).store
    check_sha256(sha256)
    # wait=False: a second request for the same upload gets a Conflict at once rather than
    # holding a worker thread until the first one ends.
    up = await run_in_threadpool(store.open_upload, sha256, offset, size, wait=False)
    pos = up.offset
    if up.active:
        try:
            await _receive_into(up, request)
            pos = await run_in_threadpool(up.close)
        except ClientDisconnect:
            pos = up.offset  # nobody will read the answer; what arrived is kept
        finally:
            await run_in_threadpool(up.abort)  # a no-op once closed
    return {"sha256": sha256, "complete": store.has(sha256), "offset": pos}


async def _receive_into(up: Upload, request: Request) -> None:
    """Feed the body to ``up``: one buffer is written (in a thread) while the next arrives."""
    writing: asyncio.Future[None] | None = None
    buf: list[bytes] = []
    buffered = 0
    try:
        async for chunk in request.stream():
            buf.append(chunk)
            buffered += len(chunk)
            if buffered >= UPLOAD_FLUSH_BYTES:
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(run_in_threadpool(up.write, buf))
                buf, buffered = [], 0
        if writing is not None:
            await writing
            writing = None
        if buf:
            await run_in_threadpool(up.write, buf)
    finally:
        if writing is not None:  # the body stopped coming: let the write in flight end
            await asyncio.wait([writing])
            if not writing.cancelled():
                writing.exception()  # retrieved; the error that ended the body is raised


@router.post("/uploads/batch", response_model=BatchResult, response_model_exclude_unset=True)
async def upload_batch(request: Request, _: Pusher) -> Any:
    """Store several small files in one request, each verified and stored on its own.

    The body is one line of JSON, ``{"files": [{"sha256": …, "size": …}, …]}``, then the
    files' bytes back to back in that order. At most ``BATCH_MAX_BYTES`` of file bytes and
    ``BATCH_MAX_FILES`` files (413 beyond). A body that does not hold exactly the declared
    bytes is refused whole (400) and stores nothing. Otherwise each file that does not
    match its hash is refused alone: the answer lists every file with ``complete`` and,
    for a refused one, the error.
    """
    limit = BATCH_MAX_HEADER_BYTES + BATCH_MAX_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        return _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return _too_large(limit)
    header_end = body.find(b"\n", 0, BATCH_MAX_HEADER_BYTES)
    if header_end < 0:
        raise InvalidInput(
            "a batch body starts with one line of JSON (at most"
            f" {BATCH_MAX_HEADER_BYTES} bytes) listing its files"
        )
    try:
        header = BatchHeader.model_validate(json.loads(body[:header_end]))
    except (ValueError, ValidationError) as e:
        raise InvalidInput(f"the batch header is not valid: {str(e)[:300]}") from None
    files = header.files
    total = sum(f.size for f in files)
    if len(files) > BATCH_MAX_FILES or total > BATCH_MAX_BYTES:
        return _too_large(
            limit,
            f"{len(files)} files of {total} bytes in one batch; at most"
            f" {BATCH_MAX_FILES} files and {BATCH_MAX_BYTES} bytes",
        )
    data = memoryview(body)[header_end + 1 :]
    if len(data) != total:
        raise InvalidInput(
            f"the batch declares {total} bytes of files but its body holds {len(data)}:"
            " nothing was stored"
        )
    items: list[tuple[str, memoryview]] = []
    pos = 0
    for f in files:
        items.append((f.sha256, data[pos : pos + f.size]))
        pos += f.size
    store = ctx(request).store
    results = await run_in_threadpool(store.put_blobs, items)
    out: list[dict[str, Any]] = []
    for f, err in zip(files, results, strict=True):
        if err is None:
            out.append({"sha256": f.sha256, "complete": True})
        else:
            out.append({"sha256": f.sha256, "complete": False, **err.to_dict()})
    return {
        "files": out,
        "stored": sum(1 for r in results if r is None),
        "refused": sum(1 for r in results if r is not None),
    }


def _too_large(limit: int, message: str | None = None) -> JSONResponse:
    body = {"error": "too_large", "message": message or f"request body over {limit} bytes"}
    return JSONResponse(body, status_code=413)


# -- diff analyses -------------------------------------------------------------------------


@router.post(
    "/images/{name}/diffs",
    status_code=201,
    response_model=DiffOut,
    response_model_exclude_unset=True,
)
def create_diff(name: str, body: DiffCreate, request: Request, who: Pusher) -> dict[str, Any]:
    c = ctx(request)
    with c.db.write() as s:
        image = services.get_image(s, name)
        out = diff_dict(services.create_diff(s, image, body.update_id, who.actor), files=False)
    c.runner.wake()
    return out


@router.get("/diffs/{diff_id}", response_model=DiffOut, response_model_exclude_unset=True)
def show_diff(
    diff_id: Id, request: Request, _: Reader, files: bool = Query(default=True)
) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        return diff_dict(services.get_diff(s, diff_id), files=files)


@router.post("/diffs/{diff_id}/retry", response_model=DiffOut, response_model_exclude_unset=True)
def retry_diff(diff_id: Id, request: Request, _: Pusher) -> dict[str, Any]:
    c = ctx(request)
    with c.db.write() as s:
        diff = services.get_diff(s, diff_id)
        services.retry_diff(s, diff)
        out = diff_dict(diff, files=False)
    c.runner.wake()
    return out


@router.post("/diffs/{diff_id}/reject", response_model=DiffOut, response_model_exclude_unset=True)
def reject_diff(diff_id: Id, request: Request, _: Pusher) -> dict[str, Any]:
    with ctx(request).db.write() as s:
        return diff_dict(services.reject_diff(s, services.get_diff(s, diff_id)), files=False)


@router.post("/diffs/{diff_id}/accept", status_code=201, response_model=VersionOut)
def accept_diff(diff_id: Id, request: Request, who: Pusher) -> dict[str, Any]:
    """Image Version Create: accept the analysis; returns the version job."""
    c = ctx(request)
    with c.db.write() as s:
        out = version_dict(services.accept_diff(s, services.get_diff(s, diff_id), who.actor))
    c.runner.wake()
    return out


# -- versions and branches -----------------------------------------------------------------


@router.get("/images/{name}/versions", response_model=list[VersionOut])
def list_versions(name: str, request: Request, _: Reader) -> list[dict[str, Any]]:
    with ctx(request).db.read() as s:
        return [version_dict(v) for v in services.list_versions(s, services.get_image(s, name))]


@router.get("/images/{name}/versions/{ref}", response_model=VersionOut)
def show_version(name: str, ref: str, request: Request, _: Reader) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        return version_dict(services.resolve_version(s, services.get_image(s, name), ref))


@router.get("/versions/{version_id}", response_model=VersionOut)
def show_version_job(version_id: Id, request: Request, _: Reader) -> dict[str, Any]:
    with ctx(request).db.read() as s:
        return version_dict(services.get_version(s, version_id))


@router.post("/images/{name}/versions/{ref}/retry", response_model=VersionOut)
def retry_version(name: str, ref: str, request: Request, _: Pusher) -> dict[str, Any]:
    c = ctx(request)
    with c.db.write() as s:
        v = services.resolve_version(s, services.get_image(s, name), ref)
        services.retry(v, "version")
        out = version_dict(v)
    c.runner.wake()
    return out


@router.get("/images/{name}/branches", response_model=list[BranchOut])
def list_branches(name: str, request: Request, _: Reader) -> list[dict[str, Any]]:
    with ctx(request).db.read() as s:
        return [branch_dict(s, b) for b in services.list_branches(s, services.get_image(s, name))]


@router.put("/images/{name}/branches/{branch}", response_model=BranchOut)
def set_branch(
    name: str, branch: str, body: BranchSet, request: Request, who: Admin
) -> dict[str, Any]:
    c = ctx(request)
    with c.db.write() as s:
        image = services.get_image(s, name)
        out = branch_dict(s, services.set_branch(s, image, branch, body.version, who.actor))
    # Signed before we answer, so a launcher asked right after sees the new pointer (by the
    # leader: through another replica, at the leader's next pass).
    c.publish()
    return out


@router.get("/images/{name}/branches/{branch}/history", response_model=list[BranchEventOut])
def branch_history(name: str, branch: str, request: Request, _: Reader) -> list[dict[str, Any]]:
    with ctx(request).db.read() as s:
        row = services.get_branch(s, services.get_image(s, name), branch)
        return [event_dict(s, e) for e in services.branch_history(s, row)]
