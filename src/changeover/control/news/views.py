"""HTTP endpoints of the news domain: an image branch's entries and its automatic release
entries. Each change is published (``publishing``) before the answer, as a branch move is,
so that a launcher asking right after sees the new feed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from changeover.control.auth.views import Admin, Reader, ctx
from changeover.control.builds.services import check_name, get_image
from changeover.control.http_input import EdgeRoute, Id
from changeover.control.news import services
from changeover.control.news.models import NewsEntry
from changeover.control.news.schemas import NewsAutoOut, NewsDeleted, NewsEntryOut

router = APIRouter(prefix="/api/v1", tags=["news"], route_class=EdgeRoute)


class NewsPost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=services.TITLE_MAX)
    body: str = Field(default="", max_length=services.BODY_MAX)
    link: str | None = Field(default=None, max_length=services.LINK_MAX)


class NewsAutoSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool


def entry_dict(image: str, row: NewsEntry) -> dict[str, Any]:
    return {
        "id": row.id,
        "image": image,
        "branch": row.branch,
        "title": row.title,
        "body": row.body,
        "link": row.link,
        "created_at": row.created_at,
        "created_by": row.created_by,
        "version_id": row.version_id,
    }


@router.get("/images/{name}/news/{branch}", response_model=list[NewsEntryOut])
def list_news(
    name: str,
    branch: str,
    request: Request,
    _: Reader,
    limit: int = Query(default=100, ge=1, le=services.ENTRIES_MAX),
) -> list[dict[str, Any]]:
    """The newest entries of a branch's feed, newest first."""
    check_name(branch, "branch name")
    with ctx(request).db.read() as s:
        image = get_image(s, name)
        return [entry_dict(name, e) for e in services.list_entries(s, image, branch, limit)]


@router.post("/images/{name}/news/{branch}", status_code=201, response_model=NewsEntryOut)
def post_news(
    name: str, branch: str, body: NewsPost, request: Request, who: Admin
) -> dict[str, Any]:
    """Post an entry (plain text: any markup in it is shown as typed, never run)."""
    check_name(branch, "branch name")
    c = ctx(request)
    with c.db.write() as s:
        image = get_image(s, name)
        row = services.post_entry(s, image, branch, body.title, body.body, body.link, who.actor)
        out = entry_dict(name, row)
    c.publish()
    return out


@router.delete("/images/{name}/news/{branch}/{entry_id}", response_model=NewsDeleted)
def delete_news(name: str, branch: str, entry_id: Id, request: Request, _: Admin) -> dict[str, Any]:
    check_name(branch, "branch name")
    c = ctx(request)
    with c.db.write() as s:
        services.delete_entry(s, get_image(s, name), branch, entry_id)
    c.publish()
    return {"deleted": entry_id}


@router.get("/images/{name}/news/{branch}/auto", response_model=NewsAutoOut)
def show_auto(name: str, branch: str, request: Request, _: Reader) -> dict[str, Any]:
    check_name(branch, "branch name")
    with ctx(request).db.read() as s:
        enabled = services.auto_enabled(s, get_image(s, name), branch)
    return {"image": name, "branch": branch, "enabled": enabled}


@router.put("/images/{name}/news/{branch}/auto", response_model=NewsAutoOut)
def set_auto(
    name: str, branch: str, body: NewsAutoSet, request: Request, who: Admin
) -> dict[str, Any]:
    """Post "<label> released" to this feed each time the branch moves (or stop)."""
    check_name(branch, "branch name")
    c = ctx(request)
    with c.db.write() as s:
        services.set_auto(s, get_image(s, name), branch, body.enabled, who.actor)
    c.publish()  # a feed with no entry yet still gets its (empty) file
    return {"image": name, "branch": branch, "enabled": body.enabled}
