"""The per-file references of the delta benchmarks (``real_pairs``, ``delta``): what a client
downloads when each changed file comes as the smaller of its best patch (HDiffPatch, or
zstd -19 ``--patch-from``) and its zstd -19 blob, from the base the publisher would use."""

from __future__ import annotations

import hashlib
from pathlib import Path

import hdiffpatch
import zstandard

from changeover.content import zstd_prefix
from changeover.content.bases import choose_bases
from changeover.content.manifest import FileEntry, Manifest


def files_of(root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_of(root: Path) -> Manifest:
    return Manifest.of(
        FileEntry(rel, p.stat().st_size, sha(p)) for rel, p in files_of(root).items()
    )


def per_file_bytes(old: Path, new: Path) -> tuple[int, int]:
    """(per-file HDiffPatch, per-file zstd -19 patch-from), each file the smaller of its
    patch and its zstd -19 blob."""
    old_m, new_m = manifest_of(old), manifest_of(new)
    held = old_m.blob_hashes()
    seen: set[str] = set()
    hdiff_total = zstd_total = 0
    z19 = zstandard.ZstdCompressor(level=19)
    for f in new_m:
        if f.sha256 in held or f.sha256 in seen:
            continue
        seen.add(f.sha256)
        data = (new / f.path).read_bytes()
        blob = len(z19.compress(data))
        bases = choose_bases(f, [old_m], limit=1)
        if not bases or not data:
            hdiff_total += blob
            zstd_total += blob
            continue
        base = (old / bases[0].path).read_bytes()
        window = min(27, max(20, (len(data) - 1).bit_length()))
        diff = hdiffpatch.diff(base, data, hdiffpatch.ZStdConfig(level=19, window=window))
        patch = zstd_prefix.compress(
            memoryview(bytearray(base)), memoryview(bytearray(data)), level=19
        )
        hdiff_total += min(blob, len(diff))
        zstd_total += min(blob, len(patch))
    return hdiff_total, zstd_total
