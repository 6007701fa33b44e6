"""Manifests: the list of files that make up one build, and the rules every path obeys.

A manifest is the identity of an image version: its id is the SHA-256 of its canonical
JSON. Every path in it is checked here, whether it was scanned from disk, uploaded by CI
or fetched from a mirror, so nothing downstream ever has to ask "could this escape?".
"""

from __future__ import annotations

import functools
import hashlib
import json
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from changeover.content.user_data import check_patterns
from changeover.errors import InvalidInput, UnsafePath

SHA256_RE = re.compile(r"[0-9a-f]{64}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE_RE = re.compile(r"[A-Za-z]:")
MAX_PATH_BYTES = 4096
MAX_COMPONENT_BYTES = 255
FORMAT = "changeover.manifest/1"


def check_path(path: str) -> str:
    """Return ``path`` if it is a safe relative POSIX path inside a tree.

    Raises:
        UnsafePath: absolute, empty, with ``.``/``..`` parts, backslashes, NUL or control
            characters, not valid UTF-8, or too long.
    """
    if not path:
        raise UnsafePath(path, "empty path")
    try:
        raw = path.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePath(path, "name is not valid UTF-8") from None
    if len(raw) > MAX_PATH_BYTES:
        raise UnsafePath(path[:80] + "...", f"longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/") or _DRIVE_RE.match(path):
        raise UnsafePath(path, "absolute path")
    if "\\" in path:
        raise UnsafePath(path, "backslash in path")
    if _CONTROL_RE.search(path):
        raise UnsafePath(path, "control character in path")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise UnsafePath(path, f"path component {part!r} is not allowed")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise UnsafePath(path, f"a name is longer than {MAX_COMPONENT_BYTES} bytes")
    return path


def check_sha256(value: str, what: str = "sha256") -> str:
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        raise InvalidInput(f"{what} must be 64 lowercase hex digits, got {value!r}")
    return value


def check_link(path: str, target: str) -> str:
    """A symlink is allowed only if it is relative and resolves inside the tree."""
    if not target or target.startswith("/"):
        raise UnsafePath(path, f"link to {target!r} points outside the build")
    try:
        target.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePath(path, "link target is not valid UTF-8") from None
    if "\0" in target:
        raise UnsafePath(path, "NUL character in link target")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../") or resolved == ".":
        raise UnsafePath(path, f"link to {target!r} points outside the build")
    return target


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a build. ``link`` is set for a symlink (then size is 0, sha256 of target)."""

    path: str
    size: int
    sha256: str
    mode: int = 0o644
    link: str | None = None

    def __post_init__(self) -> None:
        check_path(self.path)
        check_sha256(self.sha256, f"sha256 of {self.path}")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise InvalidInput(f"size of {self.path} must be a non-negative integer")
        if (
            not isinstance(self.mode, int)
            or isinstance(self.mode, bool)
            or not 0 <= self.mode <= 0o7777
        ):
            raise InvalidInput(f"mode of {self.path} must be a permission number")
        if self.link is not None:
            check_link(self.path, self.link)

    @property
    def executable(self) -> bool:
        return bool(self.mode & 0o111)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "mode": self.mode,
        }
        if self.link is not None:
            d["link"] = self.link
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FileEntry:
        if not isinstance(d, Mapping):
            raise InvalidInput("each manifest file must be an object")
        unknown = set(d) - {"path", "size", "sha256", "mode", "link"}
        if unknown:
            raise InvalidInput(f"unknown manifest field(s): {', '.join(sorted(unknown))}")
        try:
            path, size, sha = d["path"], d["size"], d["sha256"]
        except KeyError as e:
            raise InvalidInput(f"manifest file entry lacks {e.args[0]!r}") from None
        if not isinstance(path, str):
            raise InvalidInput("manifest path must be a string")
        link = d.get("link")
        if link is not None and not isinstance(link, str):
            raise InvalidInput(f"link of {path} must be a string")
        return cls(path=path, size=size, sha256=sha, mode=d.get("mode", 0o644), link=link)


@dataclass(frozen=True)
class Manifest:
    """The files of one build, sorted by path, with no duplicates and no path clashes.

    ``user_data``: patterns of the paths that are the player's (saves, settings, logs),
    which the launcher never deletes, overwrites or calls damaged
    (:mod:`changeover.content.user_data`). Part of the manifest, so signed with it; left
    out of its JSON when there are none, so that a manifest without them keeps its id.
    """

    files: tuple[FileEntry, ...]
    user_data: tuple[str, ...] = ()
    _by_path: dict[str, FileEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.files, key=lambda f: f.path))
        by_path: dict[str, FileEntry] = {}
        for f in ordered:
            if f.path in by_path:
                raise InvalidInput(f"duplicate path in manifest: {f.path}", path=f.path)
            by_path[f.path] = f
        # A file cannot also be a directory of another file ("a" and "a/b").
        for f in ordered:
            parent = posixpath.dirname(f.path)
            while parent:
                if parent in by_path:
                    raise InvalidInput(
                        f"{parent} is both a file and a directory in the manifest", path=parent
                    )
                parent = posixpath.dirname(parent)
        object.__setattr__(self, "files", ordered)
        object.__setattr__(self, "user_data", check_patterns(self.user_data))
        object.__setattr__(self, "_by_path", by_path)

    def __iter__(self) -> Iterator[FileEntry]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def get(self, path: str) -> FileEntry | None:
        return self._by_path.get(path)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def blob_hashes(self) -> set[str]:
        """Hashes whose content must be stored (links carry no blob)."""
        return {f.sha256 for f in self.files if f.link is None}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": FORMAT, "files": [f.to_dict() for f in self.files]}
        if self.user_data:
            d["user_data"] = list(self.user_data)
        return d

    def canonical_bytes(self) -> bytes:
        return self._canonical

    # Cached: a manifest is immutable, and a build of thousands of files took tens of ms
    # to serialize, which a launcher's update did several times over.
    @functools.cached_property
    def _canonical(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @functools.cached_property
    def id(self) -> str:
        """The manifest hash: the identity of the build it describes."""
        return hashlib.sha256(self._canonical).hexdigest()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        if not isinstance(d, Mapping) or not isinstance(d.get("files"), list):
            raise InvalidInput("a manifest is an object with a 'files' list")
        if d.get("format", FORMAT) != FORMAT:
            raise InvalidInput(f"unsupported manifest format {d.get('format')!r}")
        user_data = d.get("user_data", [])
        if not isinstance(user_data, list):
            raise InvalidInput("a manifest's 'user_data' is a list of path patterns")
        return cls(tuple(FileEntry.from_dict(x) for x in d["files"]), check_patterns(user_data))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Manifest:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise InvalidInput(f"manifest is not valid JSON: {e}") from None
        return cls.from_dict(data)

    @classmethod
    def of(cls, files: Iterable[FileEntry], user_data: Iterable[str] = ()) -> Manifest:
        return cls(tuple(files), tuple(user_data))
