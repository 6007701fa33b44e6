"""Publishing delta patches for an accepted version, and the index that lists them.

When a version is accepted, every file it changed or added gets a patch from the base each
of the previous versions offers (:func:`changeover.content.bases.choose_bases`). One work
item per distinct (base, target) pair runs in a process pool: it decompresses both blobs to
a scratch directory, makes the patch, checks that it really rebuilds the target, and keeps it
only if it is smaller than the target's blob (otherwise a host simply fetches the blob). A
kept patch appears atomically, named by the two hashes it joins, so it is immutable and any
CDN may cache it forever::

    content/patches/ab/<base_sha>-<target_sha>.zpatch
    content/patches/index/<manifest_id>.json      the PatchIndex of that version

Re-running is cheap and safe: a pair whose patch exists is not rebuilt, and a pair whose
patch lost to the blob leaves a marker outside ``content/`` so it is not tried again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from changeover.content.bases import choose_bases
from changeover.content.files import atomic_write
from changeover.content.manifest import Manifest, check_sha256
from changeover.content.patch import SEGMENT_BYTES, apply_patch, make_patch
from changeover.content.patch_index import PatchEntry, PatchIndex, patch_path, smallest_first
from changeover.content.store import LocalStore
from changeover.errors import IntegrityError, InvalidInput, NotFound

DEFAULT_HISTORY = 3
"""How many previous versions get patches to a new one."""
LEVELS = ((8 << 20, 19), (64 << 20, 9))
"""zstd level of a patch by the size of its target: (up to this many bytes, level), then
``BIG_LEVEL``. Level 19 pays on small files, executables above all, whose relinked code
the optimal parser codes as repeat offsets (measured, a 6.8 MB executable: 241 KB at -19,
302 KB at -9, 690 KB at -3) and costs about 1 CPU-second per MB; on big files, whose new
bytes are mostly new assets, the long-distance matcher finds what they share with the base
at any level, and -19 costs 100 times the time of -3 for the same size or larger (a 127
MB archive: 1.76 MB at -3 in 0.6 CPU-s against 1.85 MB at -19 in 96 CPU-s; a 18 MB pak:
897 KB at -3, within 0.4 % of -19)."""
BIG_LEVEL = 3


def _cost(size: int, level: int) -> float:
    """A rough CPU cost of a patch: zstd's time per byte about doubles every 3 levels."""
    return size * 2 ** (level / 3)


def patch_level(target_size: int) -> int:
    """The zstd level a patch to a content of ``target_size`` bytes is built at."""
    for up_to, level in LEVELS:
        if target_size <= up_to:
            return level
    return BIG_LEVEL


@dataclass(frozen=True, slots=True)
class _Job:
    """One patch to build; plain strings and ints so it pickles into a worker process."""

    root: str
    base: str
    target: str
    level: int
    segment_bytes: int


def _reject_marker(root: Path, base: str, target: str) -> Path:
    return root / "patch-rejects" / base[:2] / f"{base}-{target}"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _unpack(store: LocalStore, sha256: str, dest: Path) -> None:
    h = hashlib.sha256()
    with open(dest, "wb") as f:
        for chunk in store.open_blob(sha256):
            h.update(chunk)
            f.write(chunk)
    if h.hexdigest() != sha256:
        raise IntegrityError(f"blob {sha256} in the store", sha256, h.hexdigest())


def _run_job(job: _Job) -> PatchEntry | None:
    """Build one patch (in a worker process); ``None`` if it does not beat the blob."""
    store = LocalStore(Path(job.root))
    rel = patch_path(job.base, job.target)
    dest = store.content / rel
    if dest.exists():
        return PatchEntry(job.base, job.target, rel, dest.stat().st_size, _file_sha256(dest))
    marker = _reject_marker(store.root, job.base, job.target)
    if marker.exists() or not store.has(job.base):
        return None
    blob_size = store.stored_size(job.target)
    with tempfile.TemporaryDirectory(dir=store.root, prefix=".patch-") as scratch:
        old, new, out = Path(scratch, "old"), Path(scratch, "new"), Path(scratch, "patch")
        _unpack(store, job.base, old)
        _unpack(store, job.target, new)
        size = make_patch(old, new, out, level=job.level, segment_bytes=job.segment_bytes)
        if size >= blob_size:
            atomic_write(marker, str(size).encode())
            return None
        # Never publish a patch that does not rebuild its target: check it once, here.
        with open(os.devnull, "wb") as sink:
            apply_patch(
                old, out, sink, expected_size=new.stat().st_size, expected_sha256=job.target
            )
        digest = _file_sha256(out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(out, dest)
    return PatchEntry(job.base, job.target, rel, size, digest)


def build_patches(
    store: LocalStore,
    new: Manifest,
    previous: Sequence[Manifest],
    *,
    workers: int | None = None,
    level: int | None = None,
    segment_bytes: int = SEGMENT_BYTES,
    history: int = DEFAULT_HISTORY,
) -> PatchIndex:
    """Build the patches from the ``history`` most recent of ``previous`` to ``new``.

    ``previous`` lists earlier versions, most recent first. ``level`` is zstd's, the same for
    every patch; by default each patch gets :func:`patch_level` of its target's size.
    ``workers`` defaults to every
    core; each worker holds at most one segment and one window of a file in memory (see
    :mod:`changeover.content.patch`). Writes and returns the version's :class:`PatchIndex`.

    Raises:
        NotFound: a blob of ``new`` is not in the store.
    """
    jobs: dict[tuple[str, str], _Job] = {}
    sizes: dict[str, int] = {}
    for f in new:
        if f.link is not None:
            continue
        if not store.has(f.sha256):
            raise NotFound(f"blob {f.sha256} of {f.path} is not in the store", sha256=f.sha256)
        for base in choose_bases(f, previous[:history], limit=history):
            key = (base.sha256, f.sha256)
            job_level = patch_level(f.size) if level is None else level
            jobs.setdefault(key, _Job(str(store.root), *key, job_level, segment_bytes))
            sizes[f.sha256] = f.size
    # Costliest first, so the pool does not end waiting on one long job started last.
    ordered = sorted(
        jobs.values(), key=lambda j: (-_cost(sizes[j.target], j.level), j.base, j.target)
    )
    if workers is None:
        workers = os.cpu_count() or 1
    if workers <= 1 or len(ordered) <= 1:
        results = [_run_job(j) for j in ordered]
    else:
        # spawn, not fork: the control plane that calls this runs threads.
        ctx = get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(ordered)), mp_context=ctx) as pool:
            results = list(pool.map(_run_job, ordered))
    found: dict[str, list[PatchEntry]] = {}
    for entry in results:
        if entry is not None:
            found.setdefault(entry.target_sha256, []).append(entry)
    index = PatchIndex(new.id, {t: smallest_first(v) for t, v in found.items()})
    atomic_write(store.content / "patches" / "index" / f"{new.id}.json", index.to_json())
    return index


def load_index(store: LocalStore, manifest_id: str) -> PatchIndex:
    """The stored patch index of a version.

    Raises:
        NotFound: no patches were published for it.
    """
    check_sha256(manifest_id, "manifest id")
    path = store.content / "patches" / "index" / f"{manifest_id}.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no patch index for manifest {manifest_id}") from None
    index = PatchIndex.from_json(raw)
    if index.manifest_id != manifest_id:
        raise InvalidInput(f"patch index {path.name} names manifest {index.manifest_id}")
    return index
