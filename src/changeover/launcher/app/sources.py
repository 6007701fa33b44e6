"""The app's seams to parts that live elsewhere: the news feed and starting the game.

``NewsSource`` is any callable ``(feed_url, cache_dir) -> News``. The default one asks
``changeover.launcher.news`` (the feed parser with its cache of the last good feed) and
turns its answer into the window's bounded ``News``. Tests pass their own source to check
the window's side alone.

``start_game`` starts the installed build's executable detached from the launcher, with
the per-platform arguments from ``launcher.toml``, in the install's current tree (the
resolved directory: an update that switches the install later does not move the files
from under a running game).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from changeover.errors import ChangeoverError, InvalidInput, NotFound
from changeover.launcher.config import GameCommand

MAX_ITEMS = 50
"""The window lists this many entries at most, whatever a feed holds."""
MAX_TEXT = 300
"""A title longer than this is cut: a hostile feed cannot stretch the window."""


@dataclass(frozen=True)
class NewsItem:
    title: str
    date: str
    link: str | None
    """An http(s) URL, or ``None`` when the feed gave none that is safe to open."""


@dataclass(frozen=True)
class News:
    items: tuple[NewsItem, ...] = ()
    stale: bool = False
    """The items are the last good copy: the feed could not be fetched now."""
    message: str | None = None
    """Why there is nothing (or only a stale copy) to show, in a player's words."""


NewsSource = Callable[[str, Path], News]


def default_news(feed_url: str, cache_dir: Path) -> News:
    """The feed through ``changeover.launcher.news`` (bounded download, text only, the last
    good list when the feed cannot be fetched)."""
    from changeover.launcher import news

    try:
        return adapt(news.fetch_news(feed_url, cache_dir))
    except ChangeoverError as e:  # fetch_news says it never raises: a window must not die of news
        return News(message=e.message)


def adapt(result: Any) -> News:
    """Whatever the news module returns (items with title/date/link, a stale flag and a
    message) as plain, bounded :class:`News`; text only, never markup."""
    items = getattr(result, "items", ())
    if callable(items):  # a mapping's .items
        items = ()
    return News(
        items=tuple(_item(i) for i in _first(items, MAX_ITEMS)),
        stale=bool(getattr(result, "stale", False)),
        message=_text(getattr(result, "message", None)) or None,
    )


def _first(items: Iterable[Any], n: int) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if len(out) == n:
            break
        out.append(item)
    return out


def _item(raw: Any) -> NewsItem:
    date = getattr(raw, "date", None)
    if isinstance(date, dt.datetime):
        date_text = date.strftime("%Y-%m-%d")
    elif isinstance(date, dt.date):
        date_text = date.isoformat()
    else:
        date_text = _text(date)
    link = _text(getattr(raw, "link", None))
    return NewsItem(
        title=_text(getattr(raw, "title", None)) or "(untitled)",
        date=date_text,
        link=link if link.lower().startswith(("http://", "https://")) else None,
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    text = " ".join(str(value).split())  # no newlines or control layout from a feed
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def game_path(tree: Path, command: GameCommand) -> Path:
    """The executable inside ``tree``.

    Raises:
        NotFound: the build has no such file (the studio's config and build disagree).
    """
    path = tree.joinpath(*command.executable.split("/"))
    if not path.is_file():
        raise NotFound(
            f"the game's executable {command.executable} is not in the installed build;"
            " try Verify and repair, or tell the publisher",
            path=command.executable,
        )
    return path


def start_game(install: Path, command: GameCommand) -> subprocess.Popen[bytes]:
    """Start the game detached, in the install's current tree, with its arguments.

    Raises:
        NotFound: the executable is missing; InvalidInput: it cannot be started.
    """
    tree = install.resolve()
    path = game_path(tree, command)
    options: dict[str, Any] = {}
    if sys.platform.startswith("win"):
        options["creationflags"] = (
            subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        )
    else:
        options["start_new_session"] = True  # the game outlives the launcher's window
    try:
        return subprocess.Popen(
            [str(path), *command.args],
            cwd=tree,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            env=dict(os.environ),
            **options,
        )
    except OSError as e:
        raise InvalidInput(
            f"the game could not be started ({e.strerror or e}); try Verify and repair",
            path=command.executable,
        ) from e
