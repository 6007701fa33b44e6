"""The index of a version's delta patches: which stored patch turns which content into which.

Built by :mod:`changeover.content.publish`, read by every client that plans a download
(:mod:`changeover.content.plan`); kept apart from the publisher so that a launcher reading
it does not import the patch builder and its process pool.

Each entry names the method that made its patch (key ``method``): ``zstd`` (zstd
``--patch-from``, :mod:`changeover.content.patch`), ``zstd-runs`` (the same with long
unchanged stretches as copies), ``hdiffpatch`` (HDiffPatch's
compressed diff, :mod:`changeover.content.hdiff`) or ``hdiffpatch-lzma2`` (the same, coded
by LZMA2); none means zstd. zstd entries are
written as before methods existed, under ``patches``; entries of any other method under
``method_patches``, which clients older than methods never read (they refuse an entry
with a key they do not know, and would refuse the whole index, hence the whole update,
their own self-update included): they take the zstd patches and fetch the other files
whole. A method this client does not know (a newer publisher's) is kept as it is named,
never planned with (:func:`changeover.content.plan.cheapest_chain`), and refused if
applied (:class:`~changeover.errors.UnsupportedPatchMethod`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from changeover.content.manifest import check_sha256
from changeover.errors import InvalidInput

FORMAT = "changeover.patches/1"


class PatchMethod(StrEnum):
    """The methods this version of Changeover makes and applies."""

    ZSTD = "zstd"
    ZSTD_RUNS = "zstd-runs"
    """zstd ``--patch-from`` with unchanged stretches as copies (:mod:`..patch`)."""
    HDIFFPATCH = "hdiffpatch"
    HDIFFPATCH_LZMA2 = "hdiffpatch-lzma2"
    """HDiffPatch's diff coded by LZMA2: 5-9 % smaller on libraries (:mod:`..hdiff`)."""


EMPTY_SHA256: str = hashlib.sha256(b"").hexdigest()
"""The empty content. A patch from it is a *fresh* patch: a file no earlier version had,
compressed harder than its blob (which the store compresses fast, when it is uploaded).
Every client holds the empty content without fetching anything, so every client can
start from it (:func:`changeover.content.plan.plan_sync`)."""

DEFAULT_METHOD: str = PatchMethod.ZSTD.value
"""The method of an entry that names none (every index made before methods existed)."""
_METHOD_NAME = re.compile(r"[a-z0-9][a-z0-9.+-]{0,31}")
_KEYS = {"base", "path", "size", "sha256"}
_OTHERS = "method_patches"


def known_method(method: str) -> bool:
    """Whether this client can apply patches of ``method``."""
    return method in _KNOWN


_KNOWN = frozenset(m.value for m in PatchMethod)


def patch_path(base_sha256: str, target_sha256: str) -> str:
    """Where a patch lives, relative to ``content/``."""
    return f"patches/{base_sha256[:2]}/{base_sha256}-{target_sha256}.zpatch"


@dataclass(frozen=True, slots=True)
class PatchEntry:
    """One stored patch: ``base_sha256`` content + this patch → ``target_sha256`` content."""

    base_sha256: str
    target_sha256: str
    path: str
    size: int
    sha256: str
    method: str = DEFAULT_METHOD
    """How the patch was made (a :class:`PatchMethod`, or a newer one's name, kept as read)."""

    def to_dict(self) -> dict[str, Any]:
        d = {
            "base": self.base_sha256,
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
        }
        if self.method != DEFAULT_METHOD:
            d["method"] = self.method
        return d

    @classmethod
    def from_dict(cls, target: str, d: Any) -> PatchEntry:
        if not isinstance(d, Mapping) or not _KEYS <= set(d) <= _KEYS | {"method"}:
            raise InvalidInput("a patch entry has base, path, size, sha256 and maybe method")
        method = d.get("method", DEFAULT_METHOD)
        if not isinstance(method, str) or not _METHOD_NAME.fullmatch(method):
            raise InvalidInput(f"patch method must be a short lowercase name, got {method!r}")
        base = check_sha256(d["base"], "patch base")
        size = d["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise InvalidInput(f"patch size must be a positive integer, got {size!r}")
        if base == target or d["path"] != patch_path(base, target):
            raise InvalidInput(f"patch path {d['path']!r} does not match its hashes")
        sha256 = check_sha256(d["sha256"], "patch sha256")
        return cls(base, target, d["path"], size, sha256, method)


@dataclass(frozen=True)
class PatchIndex:
    """The patches to the files of one version: target sha256 → entries, smallest first."""

    manifest_id: str
    patches: Mapping[str, tuple[PatchEntry, ...]]

    def for_target(self, sha256: str) -> tuple[PatchEntry, ...]:
        return self.patches.get(sha256, ())

    def __len__(self) -> int:
        return sum(len(v) for v in self.patches.values())

    def to_dict(self) -> dict[str, Any]:
        by_key: dict[str, dict[str, list[dict[str, Any]]]] = {"patches": {}, _OTHERS: {}}
        for target, entries in sorted(self.patches.items()):
            for e in entries:
                key = "patches" if e.method == DEFAULT_METHOD else _OTHERS
                by_key[key].setdefault(target, []).append(e.to_dict())
        d: dict[str, Any] = {"format": FORMAT, "manifest": self.manifest_id, **by_key}
        if not d[_OTHERS]:
            del d[_OTHERS]  # an index of zstd patches is byte for byte what it always was
        return d

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, d: Any) -> PatchIndex:
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise InvalidInput(f"a patch index is an object with format {FORMAT!r}")
        patches, others = d.get("patches"), d.get(_OTHERS, {})
        if not isinstance(patches, Mapping) or not isinstance(others, Mapping):
            raise InvalidInput(f"a patch index has a 'patches' object (and maybe {_OTHERS!r})")
        found: dict[str, list[PatchEntry]] = {}
        for key, listed in (("patches", patches), (_OTHERS, others)):
            for target, entries in listed.items():
                check_sha256(target, "patch target")
                if not isinstance(entries, list):
                    raise InvalidInput(f"patches of {target} must be a list")
                parsed = [PatchEntry.from_dict(target, e) for e in entries]
                if any((e.method == DEFAULT_METHOD) != (key == "patches") for e in parsed):
                    raise InvalidInput(f"zstd patches go under 'patches', others under {_OTHERS!r}")
                found.setdefault(target, []).extend(parsed)
        out: dict[str, tuple[PatchEntry, ...]] = {}
        for target, parsed in found.items():
            if len({e.base_sha256 for e in parsed}) != len(parsed):
                raise InvalidInput(f"patches of {target} list a base twice")
            out[target] = smallest_first(parsed)
        return cls(check_sha256(d.get("manifest", ""), "manifest id"), out)

    @classmethod
    def from_json(cls, raw: bytes | str) -> PatchIndex:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidInput(f"patch index is not valid JSON: {e}") from None
        return cls.from_dict(data)

    @classmethod
    def merge(cls, manifest_id: str, indexes: Sequence[PatchIndex]) -> PatchIndex:
        """One index holding the patches of several versions (for multi-hop planning)."""
        merged: dict[str, dict[str, PatchEntry]] = {}
        for index in indexes:
            for target, entries in index.patches.items():
                for e in entries:
                    merged.setdefault(target, {}).setdefault(e.base_sha256, e)
        return cls(manifest_id, {t: smallest_first(v.values()) for t, v in merged.items()})


def smallest_first(entries: Any) -> tuple[PatchEntry, ...]:
    return tuple(sorted(entries, key=lambda e: (e.size, e.base_sha256)))
