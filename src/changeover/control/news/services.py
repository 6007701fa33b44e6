"""The rules of the news domain: post, list and delete entries of a branch's feed, and the
automatic entry when a branch moves.

Functions take an open session, the image row and a branch name the caller has checked
(``builds.services.check_name``), and raise our errors. This module imports only the
builds domain's tables, so that ``builds.services.set_branch`` can call
:func:`branch_moved` without an import cycle.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from changeover.control.builds.models import Image, Version
from changeover.control.db import now
from changeover.control.news.feed import NOT_XML
from changeover.control.news.models import NewsAuto, NewsEntry
from changeover.errors import InvalidInput, NotFound

TITLE_MAX = 200
BODY_MAX = 10_000
LINK_MAX = 2000
ENTRIES_MAX = 1000
"""Entries one feed keeps: posting past it drops the oldest (its feed shows far fewer)."""
_LINE_BREAK = re.compile("[\t\n\r]")
"""Fine in a body, not in a title."""


def _check_text(value: str, what: str, limit: int, *, lines: bool) -> str:
    if len(value) > limit:
        raise InvalidInput(f"a news {what} is at most {limit} characters (got {len(value)})")
    bad = NOT_XML.search(value) or (None if lines else _LINE_BREAK.search(value))
    if bad:
        raise InvalidInput(
            f"a news {what} cannot hold the control character {bad.group()!r}"
            + ("" if lines else " (a title is one line)")
        )
    return value


def check_link(link: str | None) -> str | None:
    """An absolute http or https URL, or None: a feed reader opens it on a click."""
    if link is None or link == "":
        return None
    if len(link) > LINK_MAX:
        raise InvalidInput(f"a news link is at most {LINK_MAX} characters")
    try:
        parts = urlsplit(link)
        host = parts.hostname
    except ValueError:  # "http://[oops": not a URL at all
        host = None
    if (
        host is None
        or parts.scheme not in ("http", "https")
        or any(ch.isspace() or not ch.isprintable() for ch in link)
    ):
        raise InvalidInput(
            f"news link {link[:100]!r} is not an absolute http:// or https:// URL without spaces"
        )
    return link


def post_entry(
    s: Session,
    image: Image,
    branch: str,
    title: str,
    body: str,
    link: str | None,
    actor: str,
    *,
    version_id: int | None = None,
) -> NewsEntry:
    """Add an entry to the feed of ``branch``.

    Raises:
        InvalidInput: an empty or too long title or body, a control character, a link that
            is not http(s).
    """
    title = title.strip()
    if not title:
        raise InvalidInput("a news entry needs a title")
    _check_text(title, "title", TITLE_MAX, lines=False)
    _check_text(body, "body", BODY_MAX, lines=True)
    row = NewsEntry(
        image_id=image.id,
        branch=branch,
        title=title,
        body=body,
        link=check_link(link),
        created_at=now(),
        created_by=actor,
        version_id=version_id,
    )
    s.add(row)
    s.flush()
    _trim(s, image, branch)
    return row


def _trim(s: Session, image: Image, branch: str) -> None:
    count = s.scalar(
        select(func.count(NewsEntry.id)).where(
            NewsEntry.image_id == image.id, NewsEntry.branch == branch
        )
    )
    if count is None or count <= ENTRIES_MAX:
        return
    keep_from = s.scalar(
        select(NewsEntry.id)
        .where(NewsEntry.image_id == image.id, NewsEntry.branch == branch)
        .order_by(NewsEntry.id.desc())
        .offset(ENTRIES_MAX - 1)
        .limit(1)
    )
    s.execute(
        delete(NewsEntry).where(
            NewsEntry.image_id == image.id,
            NewsEntry.branch == branch,
            NewsEntry.id < keep_from,
        )
    )


def list_entries(s: Session, image: Image, branch: str, limit: int) -> list[NewsEntry]:
    """The newest ``limit`` entries of a feed, newest first."""
    return list(
        s.scalars(
            select(NewsEntry)
            .where(NewsEntry.image_id == image.id, NewsEntry.branch == branch)
            .order_by(NewsEntry.id.desc())
            .limit(limit)
        )
    )


def delete_entry(s: Session, image: Image, branch: str, entry_id: int) -> None:
    """Raises NotFound: no such entry in this feed."""
    row = s.get(NewsEntry, entry_id)
    if row is None or row.image_id != image.id or row.branch != branch:
        raise NotFound(
            f"no news entry {entry_id} in the feed of {image.name} {branch}",
            entry_id=entry_id,
        )
    s.delete(row)


def auto_enabled(s: Session, image: Image, branch: str) -> bool:
    row = s.scalar(select(NewsAuto).where(NewsAuto.image_id == image.id, NewsAuto.branch == branch))
    return bool(row and row.enabled)


def set_auto(s: Session, image: Image, branch: str, enabled: bool, actor: str) -> bool:
    row = s.scalar(select(NewsAuto).where(NewsAuto.image_id == image.id, NewsAuto.branch == branch))
    if row is None:
        row = NewsAuto(image_id=image.id, branch=branch)
        s.add(row)
    row.enabled = enabled
    row.updated_at = now()
    row.updated_by = actor
    s.flush()
    return enabled


def release_title(version: Version) -> str:
    return f"{version.label or f'version {version.number}'} released"


def branch_moved(s: Session, image: Image, branch: str, version: Version, actor: str) -> None:
    """Called in the transaction that moved ``branch`` to ``version``: post the release
    entry if the feed asks for it. A branch moved back to a version already announced
    gets a new entry: players on it see the change either way."""
    if not auto_enabled(s, image, branch):
        return
    body = f"{image.name} {branch} is now {release_title(version).removesuffix(' released')}."
    post_entry(s, image, branch, release_title(version), body, None, actor, version_id=version.id)


def feeds(s: Session) -> list[tuple[Image, str]]:
    """Every (image, branch) that has a feed: one with an entry or with automatic news on
    (empty until its branch moves). A branch alone has none: moving a branch of
    an image that posts no news writes nothing beside its signed pointer."""
    seen: dict[tuple[int, str], tuple[Image, str]] = {}
    entries = select(Image, NewsEntry.branch).join(Image, NewsEntry.image_id == Image.id)
    auto = (
        select(Image, NewsAuto.branch)
        .join(Image, NewsAuto.image_id == Image.id)
        .where(NewsAuto.enabled.is_(True))
    )
    for query in (entries.distinct(), auto):
        for image, branch in s.execute(query):
            seen.setdefault((image.id, branch), (image, branch))
    return sorted(seen.values(), key=lambda t: (t[0].name, t[1]))
