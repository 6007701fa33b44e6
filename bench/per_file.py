"""The per-file references of the delta benchmarks (``real_pairs``, ``delta``): what a client
downloads when each changed file comes as the smaller of its best patch (HDiffPatch, or
zstd -19 ``--patch-from``) and its zstd -19 blob, from the base the publisher would use."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
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


@dataclass
class PerFile:
    """The two per-file references: bytes a client downloads, and the seconds it takes to
    make the changed files from them (decode or patch, then write), summed."""

    hdiff_bytes: int = 0
    zstd_bytes: int = 0
    hdiff_apply_s: float = 0.0
    zstd_apply_s: float = 0.0


def per_file_bytes(old: Path, new: Path) -> tuple[int, int]:
    """(per-file HDiffPatch, per-file zstd -19 patch-from), each file the smaller of its
    patch and its zstd -19 blob."""
    got = per_file(old, new)
    return got.hdiff_bytes, got.zstd_bytes


def per_file(old: Path, new: Path, scratch: Path | None = None) -> PerFile:
    """Both references' bytes; with ``scratch`` (a directory), also their apply times: each
    changed file made from what was kept for it and written (then flushed to disk) under
    ``scratch``, checked against the new file. Unchanged files cost nothing: a per-file
    patcher leaves them where they are."""
    old_m, new_m = manifest_of(old), manifest_of(new)
    held = old_m.blob_hashes()
    seen: set[str] = set()
    got = PerFile()
    z19 = zstandard.ZstdCompressor(level=19)
    for f in new_m:
        if f.sha256 in held or f.sha256 in seen:
            continue
        seen.add(f.sha256)
        data = (new / f.path).read_bytes()
        blob = z19.compress(data)
        bases = choose_bases(f, [old_m], limit=1)
        if not bases or not data:
            kept_h: tuple[str, bytes] = ("blob", blob)
            kept_z: tuple[str, bytes] = ("blob", blob)
        else:
            base_path = old / bases[0].path
            base = base_path.read_bytes()
            window = min(27, max(20, (len(data) - 1).bit_length()))
            diff = hdiffpatch.diff(base, data, hdiffpatch.ZStdConfig(level=19, window=window))
            patch = zstd_prefix.compress(
                memoryview(bytearray(base)), memoryview(bytearray(data)), level=19
            )
            kept_h = ("blob", blob) if len(blob) <= len(diff) else ("hdiff", diff)
            kept_z = ("blob", blob) if len(blob) <= len(patch) else ("zstd", patch)
        got.hdiff_bytes += len(kept_h[1])
        got.zstd_bytes += len(kept_z[1])
        if scratch is not None:
            base_of = old / bases[0].path if bases else None
            got.hdiff_apply_s += _apply(kept_h, base_of, scratch / "hdiff" / f.path, f.sha256)
            got.zstd_apply_s += _apply(kept_z, base_of, scratch / "zstd" / f.path, f.sha256)
    return got


def _apply(kept: tuple[str, bytes], base: Path | None, out: Path, sha256: str) -> float:
    """Seconds to make one file from what the client downloaded: read its base, decode,
    write and fsync it (as a client that keeps what it installs must)."""
    kind, payload = kept
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if kind == "blob":
        data = zstandard.ZstdDecompressor().decompress(payload)
    elif kind == "hdiff":
        assert base is not None
        data = hdiffpatch.apply(base.read_bytes(), payload)
    else:
        assert base is not None
        reference = zstandard.ZstdCompressionDict(base.read_bytes(), zstandard.DICT_TYPE_RAWCONTENT)
        data = zstandard.ZstdDecompressor(dict_data=reference, max_window_size=2**31).decompress(
            payload
        )
    with open(out, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    seconds = time.perf_counter() - start
    if hashlib.sha256(data).hexdigest() != sha256:
        raise AssertionError(f"the per-file {kind} reference made a wrong {out}")
    return seconds
