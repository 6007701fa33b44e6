"""Publishing delta patches for an accepted version, and the index that lists them.

When a version is accepted, every file it changed or added gets a patch from the base each
of the previous versions offers (:func:`changeover.content.bases.choose_bases`). How each
patch is made, by which method (zstd ``--patch-from`` or HDiffPatch) at which level, is
decided for the whole version at once by :func:`changeover.content.patch_choice.choose`,
from what each target is (sniffed from its first bytes), the sizes, and the publish budget.
One work item per distinct (base, target) pair runs in a process pool: it decompresses both
blobs to a scratch directory, builds each chosen candidate, keeps the smallest, checks that
it really rebuilds the target, and keeps it only if it is smaller than the target's blob
(otherwise a host simply fetches the blob). A kept patch appears atomically, named by the
two hashes it joins, so it is immutable and any CDN may cache it forever::

    content/patches/ab/<base_sha>-<target_sha>.zpatch   (whichever method made it)
    content/patches/index/<manifest_id>.json      the PatchIndex of that version

A file no earlier version had gets a *fresh* patch, from the empty content
(:data:`~changeover.content.patch_index.EMPTY_SHA256`), if the budget allows and it beats
the blob: the same file compressed at a stronger level than the store's fast one, which
every client can apply because every client holds the empty content.

Re-running is cheap and safe: a pair whose patch exists is not rebuilt (its method is read
from its magic), and a pair whose patch lost to the blob leaves a marker outside
``content/`` so it is not tried again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

from changeover.content import patching
from changeover.content.bases import choose_bases
from changeover.content.filekind import SNIFF_BYTES, FileKind, sniff
from changeover.content.files import atomic_write
from changeover.content.manifest import Manifest, check_sha256
from changeover.content.patch import SEGMENT_BYTES
from changeover.content.patch_choice import (
    COST_CLASSES,
    Calibration,
    Candidate,
    CostClass,
    PatchTask,
    PublishBudget,
    choose,
    cost_class,
)
from changeover.content.patch_index import (
    EMPTY_SHA256,
    PatchEntry,
    PatchIndex,
    PatchMethod,
    patch_path,
    smallest_first,
)
from changeover.content.store import LocalStore, blob_rel
from changeover.errors import IntegrityError, InvalidInput, NotFound

log = logging.getLogger(__name__)

DEFAULT_HISTORY = 3
"""How many previous versions get patches to a new one."""
FRESH_MIN_BYTES = 4096
"""Smaller new files are not worth a fresh patch: what a stronger level saves on them is
less than a patch's header and a second request."""


@dataclass(frozen=True, slots=True)
class _Job:
    """One patch to build; plain strings and ints so it pickles into a worker process."""

    root: str
    base: str
    target: str
    candidates: tuple[tuple[str, int], ...]
    """(method, level) of each patch to try; the smallest is kept."""
    segment_bytes: int
    cost_s: float = 0.0
    """Estimated CPU-seconds (uncalibrated): the costliest start first."""


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


class _Done(NamedTuple):
    entry: PatchEntry | None
    """``None`` if no patch beats the blob."""
    cpu_s: dict[CostClass, float] | None
    """The CPU-seconds the worker spent building, by cost class (the final check counts
    with the kept patch's); ``None`` if it built nothing (the patch was there already, or
    the pair was rejected before)."""


def _run_job(job: _Job) -> _Done:
    """Build one patch (in a worker process)."""
    cpu = dict.fromkeys(COST_CLASSES, 0.0)
    entry, built = _build(job, cpu)
    return _Done(entry, cpu if built else None)


def _build(job: _Job, cpu: dict[CostClass, float]) -> tuple[PatchEntry | None, bool]:
    """The patch (``None`` if it does not beat the blob) and whether it was built now;
    adds the CPU-seconds spent to ``cpu``."""
    store = LocalStore(Path(job.root))
    rel = patch_path(job.base, job.target)
    dest = store.content / rel
    if dest.exists():
        stored = patching.method_of(dest).value
        size, digest = dest.stat().st_size, _file_sha256(dest)
        return PatchEntry(job.base, job.target, rel, size, digest, stored), False
    marker = _reject_marker(store.root, job.base, job.target)
    fresh = job.base == EMPTY_SHA256
    if marker.exists() or not (fresh or store.has(job.base)):
        return None, False
    blob_size = store.stored_size(job.target)
    with tempfile.TemporaryDirectory(dir=store.root, prefix=".patch-") as scratch:
        old, new = Path(scratch, "old"), Path(scratch, "new")
        if fresh:
            old.touch()
        else:
            _unpack(store, job.base, old)
        _unpack(store, job.target, new)
        best: tuple[int, str, Path] | None = None
        failed: InvalidInput | None = None
        diffed: Path | None = None  # an HDiffPatch patch made: the other coding recodes it
        for n, (method, level) in enumerate(job.candidates):
            out = Path(scratch, f"patch-{n}")
            whole = patching.whole_in_memory(method)
            started = time.process_time()
            try:
                size = patching.make(
                    method,
                    old,
                    new,
                    out,
                    level=level,
                    segment_bytes=job.segment_bytes,
                    reuse=diffed if whole else None,
                )
            except InvalidInput as e:  # one method refusing a pair leaves the others
                log.warning("%s patch %s-%s not made: %s", method, job.base, job.target, e)
                failed = e
                continue
            finally:
                cpu[cost_class(PatchMethod(method))] += time.process_time() - started
            if whole and diffed is None:
                diffed = Path(scratch, f"diffed-{n}")
                os.link(out, diffed)  # kept even if ``out`` wins and is moved
            if best is None or size < best[0]:
                best = (size, patching.method_of(out).value, out)  # zstd-runs may be zstd
        if best is None and failed is not None:
            raise failed
        if best is None or best[0] >= blob_size:
            atomic_write(marker, str(best[0] if best else 0).encode())
            return None, True
        size, method, out = best
        # Never publish a patch that does not rebuild its target: check it once, here.
        started = time.process_time()
        with open(os.devnull, "wb") as sink:
            patching.apply(
                method,
                old,
                out,
                sink,
                expected_size=new.stat().st_size,
                expected_sha256=job.target,
            )
        cpu[cost_class(PatchMethod(method))] += time.process_time() - started
        digest = _file_sha256(out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(out, dest)
    return PatchEntry(job.base, job.target, rel, size, digest, method), True


def _kind(store: LocalStore, sha256: str) -> FileKind:
    """The kind of a stored content, sniffed from its first bytes."""
    head = b""
    chunks = store.open_blob(sha256)
    try:
        for chunk in chunks:
            head += chunk
            if len(head) >= SNIFF_BYTES:
                break
    finally:
        close = getattr(chunks, "close", None)  # a generator: closes the blob it holds
        if close is not None:
            close()
    return sniff(head[:SNIFF_BYTES])


def build_patches(
    store: LocalStore,
    new: Manifest,
    previous: Sequence[Manifest],
    *,
    workers: int | None = None,
    level: int | None = None,
    segment_bytes: int = SEGMENT_BYTES,
    history: int = DEFAULT_HISTORY,
    budget: PublishBudget | None = None,
    calibration: Calibration | None = None,
) -> PatchIndex:
    """Build the patches from the ``history`` most recent of ``previous`` to ``new``.

    ``previous`` lists earlier versions, most recent first. By default each patch's methods
    and levels come from :func:`changeover.content.patch_choice.choose` within ``budget``;
    ``level`` instead makes every patch a zstd one at that level. ``workers`` defaults to
    every core; each worker holds at most one segment and one window of a file in memory
    for zstd (see :mod:`changeover.content.patch`), and at most HDiffPatch's bound (see
    :mod:`changeover.content.hdiff`). ``calibration`` scales the budget to this machine and
    learns from the CPU the patches took. Writes and returns the version's
    :class:`PatchIndex`.

    Raises:
        NotFound: a blob of ``new`` is not in the store.
    """
    budget = budget or PublishBudget()
    pairs: dict[tuple[str, str], PatchTask] = {}
    # Contents an earlier version had: a client on it holds them, and needs no fresh patch.
    held = {h for m in previous[:history] for h in m.blob_hashes()}
    kinds: dict[str, FileKind] = {}
    for f in new:
        if f.link is not None:
            continue
        if not store.has(f.sha256):
            raise NotFound(f"blob {f.sha256} of {f.path} is not in the store", sha256=f.sha256)
        bases = choose_bases(f, previous[:history], limit=history)
        for rank, base in enumerate(bases):
            key = (base.sha256, f.sha256)
            if key in pairs:
                continue
            if f.sha256 not in kinds:
                kinds[f.sha256] = _kind(store, f.sha256)
            pairs[key] = PatchTask(kinds[f.sha256], base.size, f.size, rank)
        fresh = not bases and f.sha256 not in held and f.size >= FRESH_MIN_BYTES
        if fresh and (EMPTY_SHA256, f.sha256) not in pairs:
            if f.sha256 not in kinds:
                kinds[f.sha256] = _kind(store, f.sha256)
            pairs[(EMPTY_SHA256, f.sha256)] = PatchTask(kinds[f.sha256], 0, f.size)
    tasks = list(pairs.values())
    if level is None:
        options = choose(tasks, calibration.budget(budget) if calibration else budget)
    else:
        options = [(Candidate(PatchMethod.ZSTD, level),)] * len(tasks)
    estimates = {
        pair: budget.costs.by_class(option, task)
        for (pair, task), option in zip(pairs.items(), options, strict=True)
        if option  # the empty option: nothing worth building (a fresh pair's last rung)
    }
    jobs = [
        _Job(
            str(store.root),
            base,
            target,
            tuple((c.method.value, c.level) for c in option),
            segment_bytes,
            sum(estimates[(base, target)].values()),
        )
        for (base, target), option in zip(pairs, options, strict=True)
        if option
    ]
    if store.bucket is not None:
        _fetch_blobs(store, pairs)
    # Costliest first, so the pool does not end waiting on one long job started last.
    ordered = sorted(jobs, key=lambda j: (-j.cost_s, j.base, j.target))
    started = time.monotonic()
    if workers is None:
        workers = os.cpu_count() or 1
    if workers <= 1 or len(ordered) <= 1:
        results = [_run_job(j) for j in ordered]
    else:
        # spawn, not fork: the control plane that calls this runs threads.
        ctx = get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(ordered)), mp_context=ctx) as pool:
            results = list(pool.map(_run_job, ordered))
    _account(new, len(pairs), ordered, results, estimates, budget, calibration, started)
    found: dict[str, list[PatchEntry]] = {}
    for entry, _ in results:
        if entry is not None:
            found.setdefault(entry.target_sha256, []).append(entry)
            # The workers wrote to this disk only; the index must not name a patch
            # the bucket lacks.
            if store.bucket is not None and not store.bucket.exists(entry.path):
                store.published(entry.path)
    index = PatchIndex(new.id, {t: smallest_first(v) for t, v in found.items()})
    store.write_content(f"patches/index/{new.id}.json", index.to_json())
    return index


def _account(
    new: Manifest,
    pairs: int,
    jobs: Sequence[_Job],
    results: Sequence[_Done],
    estimates: Mapping[tuple[str, str], Mapping[CostClass, float]],
    budget: PublishBudget,
    calibration: Calibration | None,
    started: float,
) -> None:
    """Teach ``calibration`` what the patches built now cost against their estimates, and
    log it: what a release engineer reads when a publish is slow."""
    estimated_s = dict.fromkeys(COST_CLASSES, 0.0)
    cpu_s = dict.fromkeys(COST_CLASSES, 0.0)
    for job, done in zip(jobs, results, strict=True):
        if done.cpu_s is not None:  # built now: what it was estimated at and what it took
            for cls in COST_CLASSES:
                estimated_s[cls] += estimates[(job.base, job.target)][cls]
                cpu_s[cls] += done.cpu_s[cls]
    if calibration is not None:
        calibration.observe(estimated_s, cpu_s)
    log.info(
        "patches for %s: %d pairs, %d built in %.1f s; CPU-s taken (estimated): zstd %.1f "
        "(%.1f), hdiffpatch %.1f (%.1f); budget %.0f estimated CPU-s; calibration now %s",
        new.id[:12],
        pairs,
        sum(done.cpu_s is not None for done in results),
        time.monotonic() - started,
        cpu_s["zstd"],
        estimated_s["zstd"],
        cpu_s["hdiff"],
        estimated_s["hdiff"],
        budget.cpu_s,
        calibration.factors if calibration is not None else "off",
    )


def _fetch_blobs(store: LocalStore, pairs: Iterable[tuple[str, str]]) -> None:
    """Bring the blobs of every pair to this disk (the workers read them there)."""
    for sha256 in {h for pair in pairs for h in pair} - {EMPTY_SHA256}:
        with contextlib.suppress(NotFound):  # a base gone: its pair is skipped
            store.local(blob_rel(sha256))


def load_index(store: LocalStore, manifest_id: str) -> PatchIndex:
    """The stored patch index of a version.

    Raises:
        NotFound: no patches were published for it.
    """
    check_sha256(manifest_id, "manifest id")
    try:
        path = store.local(f"patches/index/{manifest_id}.json")
    except NotFound:
        raise NotFound(f"no patch index for manifest {manifest_id}") from None
    raw = path.read_bytes()
    index = PatchIndex.from_json(raw)
    if index.manifest_id != manifest_id:
        raise InvalidInput(f"patch index {path.name} names manifest {index.manifest_id}")
    return index
