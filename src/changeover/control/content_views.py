"""Serving the content tree over HTTP, exactly as a static server or CDN would.

Hash-named objects (blobs, patches, manifests) never change, so they are cacheable for a
year; anything else (signed metadata, branch pointers) must be revalidated. No token is
needed: the tree is public by design, and every byte is verified by the client anyway.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from changeover.content.manifest import check_path
from changeover.control.auth.views import ctx
from changeover.control.http_input import EdgeRoute
from changeover.errors import NotFound

router = APIRouter(tags=["content"], route_class=EdgeRoute)

IMMUTABLE = ("blobs/", "patches/", "manifests/")


def cache_control(rel: str) -> str:
    if rel.startswith(IMMUTABLE):
        return "public, max-age=31536000, immutable"
    return "no-cache"


@router.get(
    "/content/{rel:path}",
    response_class=FileResponse,
    # Bytes as stored; the type is guessed from the name, as a static server does.
    responses={
        200: {
            "description": "The file",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
def content(rel: str, request: Request) -> FileResponse:
    check_path(rel)
    try:
        # From this disk; with a bucket, fetched into it first if only the bucket has it.
        path = ctx(request).store.local(rel)
    except NotFound:
        raise NotFound(f"no content at {rel}") from None
    if not path.is_file():
        raise NotFound(f"no content at {rel}")
    return FileResponse(path, headers={"Cache-Control": cache_control(rel)})
