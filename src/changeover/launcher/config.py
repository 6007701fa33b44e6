"""The per-game file a studio ships beside its launcher: ``launcher.toml``.

It names the game (title, logo), where its content is (the content URL and the pinned
trust root), the image and the branches players may choose, how to start the game on each
platform, where the news feed is, and which image and branch the launcher itself follows
for its own updates. Paths in it are relative to the file. Example (``docs/launcher.md``)::

    title = "Hourai"
    logo = "logo.png"
    content_url = "https://cdn.example.com/content"
    root = "root.json"
    image = "hourai"

    [[branches]]
    name = "production"
    title = "Live"

    [game.linux]
    executable = "bin/hourai"
    args = ["--fullscreen"]

    [launcher]
    image = "hourai-launcher"

``copy = true`` (top level) installs writable copies instead of read-only hard links.

Read with the standard library's TOML parser and checked by hand: every error names the
file and the key, so that a studio's typo is found before a player sees it.
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from changeover.errors import InvalidInput

PLATFORMS = ("linux", "windows", "macos")


def this_platform() -> str:
    """``linux``, ``windows`` or ``macos``: the key of ``[game.*]`` that applies here."""
    if sys.platform.startswith("win"):
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    return "linux"


@dataclass(frozen=True)
class Branch:
    name: str
    title: str
    """What players see in the branch selector."""


@dataclass(frozen=True)
class GameCommand:
    executable: str
    """A path inside the installed build, with ``/`` separators."""
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class SelfUpdate:
    image: str
    branch: str = "production"


@dataclass(frozen=True)
class LauncherConfig:
    source: Path
    title: str
    content_url: str
    root: Path
    image: str
    branches: tuple[Branch, ...]
    game: dict[str, GameCommand]
    install_dir: Path
    logo: Path | None = None
    news_url: str | None = None
    self_update: SelfUpdate | None = None
    copy: bool = False
    """``copy = true``: install writable copies rather than read-only hard links shared
    between versions, for a game that writes beside its own files (``docs/launcher.md``)."""

    @property
    def install_mode(self) -> Literal["link", "copy"]:
        return "copy" if self.copy else "link"

    def branch(self, name: str) -> Branch:
        for b in self.branches:
            if b.name == name:
                return b
        raise InvalidInput(f"{self.source}: no branch {name!r} (it has {self.branch_names})")

    @property
    def branch_names(self) -> str:
        return ", ".join(b.name for b in self.branches)

    def install_path(self, branch: str) -> Path:
        """Each branch installs side by side in its own directory, sharing one cache."""
        return self.install_dir / branch

    def command(self, platform: str | None = None) -> GameCommand:
        platform = platform or this_platform()
        try:
            return self.game[platform]
        except KeyError:
            raise InvalidInput(
                f"{self.source}: [game.{platform}] is missing: this game cannot be started"
                f" on {platform}"
            ) from None


def load(path: Path) -> LauncherConfig:
    """Read and check ``path``.

    Raises:
        InvalidInput: the file is missing, is not TOML, or a key is missing or wrong; the
            message names the file and the key.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"the launcher's configuration {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read the launcher's configuration {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidInput(f"{path} is not valid TOML: {e}") from None
    return parse(data, path)


def parse(data: dict[str, Any], source: Path) -> LauncherConfig:
    here = source.parent
    keys = _Keys(data, source)
    branches = tuple(
        Branch(name=b.text("name"), title=b.text("title", default=b.text("name")))
        for b in keys.tables("branches")
    )
    if not branches:
        raise InvalidInput(f"{source}: [[branches]] is missing: name at least one branch")
    if len({b.name for b in branches}) != len(branches):
        raise InvalidInput(f"{source}: [[branches]] names a branch twice")
    game = {
        platform: GameCommand(t.text("executable"), tuple(t.texts("args")))
        for platform, t in keys.table("game").subtables(PLATFORMS).items()
    }
    if not game:
        raise InvalidInput(f"{source}: [game] needs one of [game.linux], [game.windows] …")
    for command in game.values():
        _check_relative(command.executable, source, "game executable")
    launcher = keys.table("launcher", required=False)
    logo = keys.text("logo", default="")
    news = keys.text("news", default="")
    return LauncherConfig(
        source=source,
        title=keys.text("title"),
        content_url=_url(keys.text("content_url"), source, "content_url"),
        root=here / keys.text("root"),
        image=keys.text("image"),
        branches=branches,
        game=game,
        install_dir=_install_dir(keys.text("install_dir", default=""), keys.text("title")),
        logo=here / logo if logo else None,
        news_url=_url(news, source, "news") if news else None,
        self_update=(
            SelfUpdate(launcher.text("image"), launcher.text("branch", default="production"))
            if launcher.data
            else None
        ),
        copy=keys.flag("copy"),
    )


class _Keys:
    """One table of the file, whose getters raise errors naming the file and the key."""

    def __init__(self, data: dict[str, Any], source: Path, where: str = "") -> None:
        self.data = data
        self.source = source
        self.where = where

    def _name(self, key: str) -> str:
        return f"{self.where}{key}"

    def text(self, key: str, *, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if value is None:
            raise InvalidInput(f"{self.source}: {self._name(key)} is missing")
        if not isinstance(value, str) or (not value and default is None):
            raise InvalidInput(f"{self.source}: {self._name(key)} must be a non-empty string")
        return value

    def flag(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise InvalidInput(f"{self.source}: {self._name(key)} must be true or false")
        return value

    def texts(self, key: str) -> list[str]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidInput(f"{self.source}: {self._name(key)} must be a list of strings")
        return value

    def table(self, key: str, *, required: bool = True) -> _Keys:
        value = self.data.get(key)
        if value is None and not required:
            return _Keys({}, self.source, f"{key}.")
        if not isinstance(value, dict):
            raise InvalidInput(f"{self.source}: [{self._name(key)}] is missing or not a table")
        return _Keys(value, self.source, f"{self._name(key)}.")

    def tables(self, key: str) -> list[_Keys]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise InvalidInput(f"{self.source}: {self._name(key)} must be [[{key}]] tables")
        return [_Keys(v, self.source, f"{self._name(key)}[{i}].") for i, v in enumerate(value)]

    def subtables(self, allowed: tuple[str, ...]) -> dict[str, _Keys]:
        unknown = sorted(set(self.data) - set(allowed))
        if unknown:
            raise InvalidInput(
                f"{self.source}: [{self.where}{unknown[0]}] is not a platform"
                f" (use {', '.join(allowed)})"
            )
        return {k: self.table(k) for k in self.data}


def _url(value: str, source: Path, key: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"{source}: {key} {value!r} is not an http:// or https:// URL")
    return value.rstrip("/")


def _check_relative(path: str, source: Path, what: str) -> None:
    if path.startswith(("/", "\\")) or ".." in path.replace("\\", "/").split("/") or ":" in path:
        raise InvalidInput(f"{source}: the {what} {path!r} must be a path inside the build")


def _install_dir(value: str, title: str) -> Path:
    """Where the game goes: ``install_dir`` (``~`` expanded; relative to the user's data
    directory), by default a folder named for the game there."""
    path = Path(os.path.expanduser(value or title))
    return path if path.is_absolute() else user_data_dir() / path


def user_data_dir() -> Path:
    """Where per-user application data lives on this platform."""
    if sys.platform.startswith("win"):
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
