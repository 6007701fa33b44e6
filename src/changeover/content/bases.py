"""Which old files to patch a new file from.

A patch helps a host only if the host has its base on disk, and a host on a previous version
has exactly that version's files. So each previous manifest (most recent first) offers at
most one base for a new file:

* nothing, if it already holds the new content under some path (the host copies it);
* the file at the same path, if there is one (a changed file);
* otherwise the file that looks like the same file renamed. Builds put hashes and versions
  in names (``libfoo-3f2a9c.so`` → ``libfoo-8b1d22.so``, ``app.1.2.0.pak``): names are
  compared with those tokens stripped, first exactly (same directory, then anywhere), then
  by similarity within the same directory and extension, and ties go to the closest size.

Bases are deduplicated by content, links and empty files are never bases, and the result is
deterministic: the same manifests always give the same list, in the same order.
"""

from __future__ import annotations

import difflib
import posixpath
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from changeover.content.manifest import FileEntry, Manifest

SIMILARITY = 0.6
"""Smallest name similarity (0..1, difflib ratio of normalised names) for a fuzzy match."""
MAX_FUZZY_CANDIDATES = 256
"""Fuzzy matching looks at this many same-directory, same-extension files at most."""

_TOKEN = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9]+")
_HEX = re.compile(r"[0-9a-f]+")
_SEPARATORS = "-_.+~ "


def _is_noise(token: str) -> bool:
    """Tokens that change from build to build: versions, counters, content hashes."""
    t = token.lower()
    if t.isdigit() or (t[0] == "v" and t[1:].isdigit()):
        return True
    has_digit = any(c.isdigit() for c in t)
    if len(t) >= 6 and has_digit and _HEX.fullmatch(t):
        return True
    return len(t) >= 8 and has_digit and any(c.isalpha() for c in t)


def normalize_name(name: str) -> tuple[str, str]:
    """(stem, extension) of a file name with hash- and version-like tokens removed.

    ``libfoo-3f2a9c.so`` and ``libfoo.so.1.2`` both give ``("libfoo", "so")``.
    """
    kept: list[str] = []
    for token in _TOKEN.findall(name.lower()):
        if token[0].isalnum():
            if not _is_noise(token):
                kept.append(token)
        elif kept and not kept[-1][0].isalnum():
            # Dropping a token leaves separators side by side; keep a dot if there was one
            # because it is what marks the extension.
            if "." in token:
                kept[-1] = "."
        else:
            kept.append("." if "." in token else token[0])
    text = "".join(kept).rstrip(_SEPARATORS)
    stem, dot, ext = text.rpartition(".")
    if not dot:
        return text.strip(_SEPARATORS), ""
    return stem.strip(_SEPARATORS), ext


def _normalize_dir(path: str) -> str:
    parts = [normalize_name(p)[0] or p for p in posixpath.dirname(path).split("/") if p]
    return "/".join(parts)


@dataclass(frozen=True, slots=True)
class _Key:
    directory: str
    stem: str
    ext: str


def _key(path: str) -> _Key:
    stem, ext = normalize_name(posixpath.basename(path))
    return _Key(_normalize_dir(path), stem, ext)


@dataclass
class _Index:
    hashes: set[str]
    by_key: dict[_Key, list[FileEntry]]
    by_name: dict[tuple[str, str], list[FileEntry]]
    by_dir_ext: dict[tuple[str, str], list[tuple[str, FileEntry]]]


# Indexing a manifest is linear and choose_bases runs once per new file, so each old
# manifest is indexed once and forgotten when it is.
_INDEXES: dict[int, _Index] = {}


def _index(manifest: Manifest) -> _Index:
    found = _INDEXES.get(id(manifest))
    if found is not None:
        return found
    idx = _Index(manifest.blob_hashes(), {}, {}, {})
    for f in manifest:
        if f.link is not None or f.size == 0:
            continue
        k = _key(f.path)
        idx.by_key.setdefault(k, []).append(f)
        idx.by_name.setdefault((k.stem, k.ext), []).append(f)
        idx.by_dir_ext.setdefault((k.directory, k.ext), []).append((k.stem, f))
    _INDEXES[id(manifest)] = idx
    weakref.finalize(manifest, _INDEXES.pop, id(manifest), None)
    return idx


def _closest_size(new: FileEntry, candidates: Sequence[FileEntry]) -> FileEntry:
    return min(candidates, key=lambda f: (abs(f.size - new.size), f.path))


def _similar(new: FileEntry, key: _Key, idx: _Index) -> FileEntry | None:
    pool = idx.by_dir_ext.get((key.directory, key.ext), [])
    if len(pool) > MAX_FUZZY_CANDIDATES:
        pool = sorted(pool, key=lambda c: (abs(c[1].size - new.size), c[1].path))
        pool = pool[:MAX_FUZZY_CANDIDATES]
    best: tuple[float, int, str] | None = None
    match = None
    for stem, f in pool:
        matcher = difflib.SequenceMatcher(None, key.stem, stem)
        if matcher.quick_ratio() < SIMILARITY:
            continue
        ratio = matcher.ratio()
        if ratio < SIMILARITY:
            continue
        rank = (-ratio, abs(f.size - new.size), f.path)
        if best is None or rank < best:
            best, match = rank, f
    return match


def base_in(new: FileEntry, old: Manifest) -> FileEntry | None:
    """The one base ``old`` offers for ``new`` (see the module docstring), or ``None``."""
    idx = _index(old)
    if new.link is not None or new.sha256 in idx.hashes:
        return None
    same = old.get(new.path)
    if same is not None:
        return same if same.link is None and same.size > 0 else None
    key = _key(new.path)
    for candidates in (idx.by_key.get(key), idx.by_name.get((key.stem, key.ext))):
        if candidates:
            return _closest_size(new, candidates)
    return _similar(new, key, idx)


def choose_bases(
    new: FileEntry, old_manifests: Sequence[Manifest], *, limit: int = 3
) -> list[FileEntry]:
    """Candidate bases for patching ``new``: one per old manifest, most recent first.

    ``old_manifests`` are the previous versions, most recent first; at most ``limit``
    distinct bases are returned.
    """
    bases: list[FileEntry] = []
    seen: set[str] = set()
    for old in old_manifests:
        if len(bases) >= limit:
            break
        base = base_in(new, old)
        if base is not None and base.sha256 not in seen and base.sha256 != new.sha256:
            seen.add(base.sha256)
            bases.append(base)
    return bases
