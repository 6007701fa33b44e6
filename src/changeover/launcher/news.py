"""The launcher's news list: a feed fetched, parsed and reduced to plain items.

:func:`fetch_news` downloads the feed a studio configured (``news`` in ``launcher.toml``;
the control plane publishes one per image branch, ``docs/news.md``) through the
launcher's own downloader (``launcher.fetch``: bounded in bytes, cut off past its
deadline, no httpx on players' machines), parses it with feedparser (RSS 0.9x, 1.0 and
2.0, Atom 0.3 and 1.0) and returns :class:`NewsItem` values: a title of plain text, a
date, and a link only if it is ``http`` or ``https``. Nothing of the feed is ever shown as
markup or run: every piece of markup is stripped (the text of ``<script>`` and ``<style>``
with it), control and bidirectional-override characters are dropped, lengths bounded.

The last good list is kept in the launcher's cache. When the feed cannot be fetched or
parsed, :func:`fetch_news` never raises: it returns that list marked ``stale`` (or no
items) with a message a player can read. A feed that declares its own XML entities is
refused before parsing: legitimate feeds never need them, and they are how a small
document expands into gigabytes ("billion laughs" and its quadratic cousin).

Portable by design: the standard library, feedparser and ``launcher.fetch``; no control
plane, no Unix-only module.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import feedparser

from changeover.errors import ChangeoverError, InvalidInput, RemoteError
from changeover.launcher.fetch import Fetcher, Pace, RateLimit

MAX_BYTES = 1 << 20
"""A feed larger than this is refused: a year of weekly news with long bodies is ~200 KiB."""
PACE = Pace(timeout_s=10.0, min_rate=64 << 10)
"""10 s to connect and between two pieces of data; 26 s for a whole feed of MAX_BYTES."""
MAX_ITEMS = 50
TITLE_MAX = 300
LINK_MAX = 2000
_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)
_DROPPED = {"Cc", "Cf", "Co", "Cs"}
"""Unicode categories never shown: controls, format characters (bidi overrides, zero
widths), private use and surrogates."""
_SKIPPED_TAGS = frozenset({"script", "style", "template", "noscript", "iframe", "object"})


@dataclass(frozen=True)
class NewsItem:
    title: str
    """Plain text, one line."""
    date: datetime | None
    """When it was published (UTC), if the feed says."""
    link: str | None
    """An http or https URL, or None."""


@dataclass(frozen=True)
class News:
    items: tuple[NewsItem, ...]
    """Newest first, as the feed lists them."""
    stale: bool = False
    """True: the feed could not be fetched or parsed; ``items`` is the last good list."""
    message: str | None = None
    """Why it is stale, for the player."""
    fetched_at: float | None = None
    """When ``items`` were fetched (Unix time), None if never."""


def fetch_news(
    url: str,
    cache_dir: Path,
    *,
    max_bytes: int = MAX_BYTES,
    pace: Pace = PACE,
    retries: int = 1,
) -> News:
    """The feed at ``url`` as plain items; the cached list, marked stale, if it fails.

    ``cache_dir`` is the launcher's cache (the last good list is kept under ``news/``).
    Never raises for what the network or the feed does; a cache that cannot be written
    only means the next failure has nothing to fall back on.
    """
    cache = _cache_file(cache_dir, url)
    try:
        data = _download(url, cache.with_suffix(".part"), max_bytes, pace, retries)
        items = parse_feed(data, url)
    except ChangeoverError as e:
        return _fallback(url, cache, e.message)
    now = time.time()
    with contextlib.suppress(OSError):  # news is shown either way
        _write_cache(cache, url, items, now)
    return News(items, fetched_at=now)


def cached_news(url: str, cache_dir: Path) -> News | None:
    """The last good list of ``url`` from the cache, to show before (or without) a fetch;
    None if there is none. Marked ``stale``: it is not fresh from the server."""
    loaded = _read_cache(_cache_file(cache_dir, url), url)
    if loaded is None:
        return None
    items, at = loaded
    return News(items, stale=True, message=None, fetched_at=at)


def parse_feed(data: bytes, url: str = "") -> tuple[NewsItem, ...]:
    """The items of an RSS or Atom document.

    Raises:
        InvalidInput: an empty document, entity declarations, XML that is not
            well-formed, or a document that is no feed.
    """
    if not data.strip():
        raise InvalidInput("the news feed is empty")
    if _ENTITY.search(data):
        raise InvalidInput("the news feed declares XML entities, which are refused")
    # As served with an XML type: feedparser then parses strictly rather than guessing.
    headers = {"content-type": "application/xml", **({"content-location": url} if url else {})}
    # A stream, never a string: feedparser fetches a string that looks like a URL and
    # opens one that names a file (bytes too), and a server chooses what it sends.
    parsed = feedparser.parse(io.BytesIO(data), response_headers=headers, sanitize_html=True)
    problem = parsed.get("bozo_exception")
    if parsed.get("bozo") and not isinstance(problem, feedparser.CharacterEncodingOverride):
        raise InvalidInput(f"the news feed is not well-formed XML ({_short(problem)})")
    if not parsed.get("version"):
        raise InvalidInput("the news address does not serve an RSS or Atom feed")
    items = []
    for entry in parsed.entries:
        item = _item(entry)
        if item is not None:
            items.append(item)
        if len(items) == MAX_ITEMS:
            break
    return tuple(items)


def plain_text(markup: str, limit: int = TITLE_MAX) -> str:
    """``markup`` as one line of text: tags and what scripts and styles hold removed,
    entities decoded, invisible characters dropped, whitespace collapsed, at most
    ``limit`` characters."""
    parser = _TextOnly()
    parser.feed(markup)
    parser.close()
    text = "".join(
        " " if ch.isspace() else ch
        for ch in "".join(parser.parts)
        if ch.isspace() or unicodedata.category(ch) not in _DROPPED
    )
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def safe_link(link: object) -> str | None:
    """``link`` if it is an absolute http(s) URL a browser may open, else None."""
    if not isinstance(link, str) or not link or len(link) > LINK_MAX:
        return None
    if any(ch.isspace() or not ch.isprintable() for ch in link):
        return None
    try:
        parts = urlsplit(link)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return link


# -- internals ---------------------------------------------------------------------------


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag in ("br", "p", "div", "li"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _item(entry: Any) -> NewsItem | None:
    title = plain_text(str(entry.get("title") or ""))
    if not title:  # RSS allows an item of a description alone
        title = plain_text(str(entry.get("summary") or ""), 120)
    if not title:
        return None
    return NewsItem(title=title, date=_date(entry), link=safe_link(entry.get("link")))


def _date(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = entry.get(key)
        if value:
            try:
                year, month, day, hour, minute, second = value[:6]
                return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
            except (TypeError, ValueError):
                continue
    return None


def _short(problem: object) -> str:
    text = " ".join(str(problem).split()) or type(problem).__name__
    return text[:200]


def _download(url: str, part: Path, max_bytes: int, pace: Pace, retries: int) -> bytes:
    if safe_link(url) is None:
        raise InvalidInput(f"the news address {url[:200]!r} is not an http:// or https:// URL")
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
        part.unlink(missing_ok=True)  # a feed is fetched whole each time, never resumed
    except OSError as e:
        raise RemoteError(f"cannot write the news into {part.parent}: {e.strerror}") from e
    fetcher = Fetcher("", RateLimit(None), retries=retries, pace=pace)
    try:
        fetcher.download_url(url, part, max_bytes, name="the news feed")
        return part.read_bytes()
    except RemoteError as e:
        if e.facts.get("oversized"):
            raise RemoteError(
                f"the news feed is larger than {max_bytes} bytes, the most a launcher reads",
                url=url,
            ) from e
        raise
    except OSError as e:
        raise RemoteError(f"cannot write the news into {part.parent}: {e.strerror}") from e
    finally:
        fetcher.close()
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)


def _fallback(url: str, cache: Path, reason: str) -> News:
    loaded = _read_cache(cache, url)
    if loaded is None:
        return News((), stale=True, message=f"The news cannot be shown: {reason}.")
    items, at = loaded
    when = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    message = f"The news could not be updated ({reason}); showing the news of {when}."
    return News(items, stale=True, message=message, fetched_at=at)


def _cache_file(cache_dir: Path, url: str) -> Path:
    return cache_dir / "news" / f"{hashlib.sha256(url.encode()).hexdigest()[:20]}.json"


def _write_cache(path: Path, url: str, items: tuple[NewsItem, ...], at: float) -> None:
    data = {
        "url": url,
        "fetched_at": at,
        "items": [
            {"title": i.title, "date": i.date.isoformat() if i.date else None, "link": i.link}
            for i in items
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)  # a reader sees the old list or the new one, whole
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_cache(path: Path, url: str) -> tuple[tuple[NewsItem, ...], float] | None:
    """The cached list, checked again as if it came from the network (the file is the
    player's, and may be damaged); None if missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("url") != url:
            return None
        items = []
        for raw in data["items"][:MAX_ITEMS]:
            title = plain_text(str(raw["title"]))
            date = datetime.fromisoformat(raw["date"]) if raw.get("date") else None
            if title:
                items.append(NewsItem(title, date, safe_link(raw.get("link"))))
        return tuple(items), float(data["fetched_at"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


__all__ = ["News", "NewsItem", "cached_news", "fetch_news", "parse_feed", "plain_text"]
