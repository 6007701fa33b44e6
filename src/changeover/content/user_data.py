"""User-data patterns: the paths of an install that belong to the player, not the build.

A version declares them in its manifest (``user_data``, signed with it), e.g.
``saves``, ``settings.ini``, ``**/*.log``. The launcher never deletes, overwrites or
reports as damaged a file that matches one, whichever version shipped it or whether none
did; a file a version ships under such a path is installed once, as a writable copy, and
is the player's from then on.

A pattern is a relative POSIX path whose names may use ``*``, ``?`` and ``[...]`` (within
one name) and ``**`` (any number of directories, none included). It matches a path, or any
directory above it: ``saves`` covers ``saves/slot1.sav``. Matching is case-sensitive (the
build's paths are; on Windows, whose file names are not, write the pattern in the case the
game uses).
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable

from changeover.errors import InvalidInput

MAX_PATTERNS = 64
MAX_PATTERN_CHARS = 512
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def check_pattern(pattern: object) -> str:
    """``pattern`` if it is a valid user-data pattern.

    Raises:
        InvalidInput: not a string, empty, absolute, with ``.``/``..``/empty parts, a
            backslash or a control character, or too long.
    """
    if not isinstance(pattern, str) or not pattern:
        raise InvalidInput(f"a user-data pattern must be a non-empty string, got {pattern!r}")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidInput(f"user-data pattern {pattern[:40]!r}… is over {MAX_PATTERN_CHARS} chars")
    if pattern.startswith("/") or "\\" in pattern or _CONTROL_RE.search(pattern):
        raise InvalidInput(
            f"user-data pattern {pattern!r} must be a relative path with / separators"
        )
    if any(part in ("", ".", "..") for part in pattern.split("/")):
        raise InvalidInput(f"user-data pattern {pattern!r} has an empty, . or .. part")
    return pattern


def check_patterns(patterns: Iterable[object]) -> tuple[str, ...]:
    """Sorted, without duplicates, each checked (at most ``MAX_PATTERNS``)."""
    checked = sorted({check_pattern(p) for p in patterns})
    if len(checked) > MAX_PATTERNS:
        raise InvalidInput(f"at most {MAX_PATTERNS} user-data patterns, got {len(checked)}")
    return tuple(checked)


class UserData:
    """Answers whether a path of an install is the player's."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(tuple(p.split("/")) for p in check_patterns(patterns))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, path: str) -> bool:
        parts = tuple(path.split("/"))
        return any(_match(pattern, parts) for pattern in self.patterns)


@functools.lru_cache(maxsize=4096)
def _match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Whether ``pattern`` matches ``parts`` or a leading run of them (a directory above)."""
    if not pattern:
        return True
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _match(rest, parts[1:])
