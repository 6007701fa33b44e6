"""Bring an install to what a branch points at, downloading as little as possible.

The flow: refresh signed metadata → read the branch pointer, the manifest and the delivery
index (all verified by TUF) → plan, per content the install lacks, the cheapest source
(an object already held by any install in the cache, a patch from a held object, or the
blob) → fetch in parallel, verifying every byte → build a complete tree → switch ``DIR``
to it atomically → drop what no install needs any more. A run killed at any point is
resumed by the next: verified objects stay, partial downloads continue by range request.

Every error a sync raises says, in its message, which file it is about, whether the
install was left as it was, and whether retrying can help (:func:`explained`): this is
what a player reads.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from changeover.content import patching
from changeover.content.delivery import DeliveryIndex
from changeover.content.manifest import Manifest, check_path
from changeover.content.patch_index import PatchEntry
from changeover.content.plan import Copy, Keep, Link, LocalFile, Patch, Remove, plan_sync
from changeover.errors import (
    ChangeoverError,
    DiskError,
    IntegrityError,
    Interrupted,
    InvalidInput,
    NotFound,
    RemoteError,
    UntrustedMetadata,
)
from changeover.launcher.fetch import DEFAULT_MIN_RATE, DEFAULT_TIMEOUT_S, Fetcher, Pace, RateLimit
from changeover.launcher.install import (
    INSTALL_MODES,
    Install,
    InstallMode,
    default_cache,
    verify_tree,
)
from changeover.launcher.locks import CacheUsers, metadata_lock
from changeover.launcher.objects import ObjectStore
from changeover.launcher.trust import TrustedTargets

Progress = Callable[[int, int], None]
"""Called with (bytes just received, total bytes planned)."""
Phase = Callable[[str], None]
"""Called with ``"downloading"`` once the plan is made and ``"installing"`` before the new
tree is built; may raise :class:`Interrupted` to stop the sync there (as may
``Progress`` and ``checkpoint``)."""


@dataclass
class SyncReport:
    image: str
    branch: str
    version: int
    label: str | None
    manifest: str
    files: int
    total_bytes: int
    downloaded_bytes: int
    fetched_blobs: int
    applied_patches: int
    reused_objects: int
    already_current: bool
    seconds: float
    collected_objects: int | None = 0
    """Objects the closing garbage collection deleted; ``None`` when it was left to
    another launcher that was using the cache (``locks.CacheUsers``)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds by phase (:class:`Stopwatch`): where a slow update spent its time."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Stopwatch:
    """Seconds spent per phase of one sync, wall clock: ``resolve`` (signed metadata),
    ``plan``, ``obtain`` (the parallel downloads and applies, and ``commit`` at its end:
    making the last group of objects durable), ``install`` (building the new tree and
    switching to it), ``collect`` (garbage collection). Inside ``obtain``, summed over the
    workers: ``fetch`` (waiting for the network) and ``apply`` (making and storing objects
    from what arrived: decoding, patching, hashing, writing); and, for those two,
    ``fetch_wall`` and ``apply_wall``: the wall clock during which at least one worker was
    in the phase (two workers applying for a second each, side by side, are 2 s of
    ``apply`` and 1 s of ``apply_wall``)."""

    OVERLAPPING = ("fetch", "apply")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()
        self._inside: dict[str, int] = {}
        self._since: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = self._enter(phase)
        try:
            yield
        finally:
            self._leave(phase, started)

    @contextlib.contextmanager
    def limited(self, phase: str, slots: threading.Semaphore) -> Iterator[None]:
        """Time ``phase`` once one of ``slots`` is had: waiting for one is not the phase."""
        with slots, self(phase):
            yield

    def add(self, phase: str, seconds: float) -> None:
        with self._lock:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def rounded(self) -> dict[str, float]:
        return {phase: round(s, 4) for phase, s in self.seconds.items()}

    def _enter(self, phase: str) -> float:
        now = time.monotonic()
        with self._lock:
            inside = self._inside.get(phase, 0)
            if inside == 0:
                self._since[phase] = now
            self._inside[phase] = inside + 1
        return now

    def _leave(self, phase: str, started: float) -> None:
        now = time.monotonic()
        with self._lock:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + now - started
            self._inside[phase] -= 1
            if self._inside[phase] == 0 and phase in self.OVERLAPPING:
                wall = f"{phase}_wall"
                self.seconds[wall] = self.seconds.get(wall, 0.0) + now - self._since[phase]


@dataclass(frozen=True)
class Step:
    """How one missing content is obtained: from a held variant, a patch chain, or a blob."""

    sha256: str
    size: int
    executable: bool
    download_bytes: int
    """What the chosen source costs: the patches' bytes, the blob's, or 0."""
    name: str
    """A path of the build with this content, to name it in errors."""
    blob_bytes: int = 0
    """The blob's signed size: what a failed patch falls back to."""
    base_sha256: str | None = None
    chain: tuple[PatchEntry, ...] = ()
    blake3: str | None = None
    """The content's BLAKE3 from the signed index, computed beside its SHA-256 when the
    object is stored: signed metadata whose two digests disagree is refused."""


def plan_steps(manifest: Manifest, index: DeliveryIndex, objects: ObjectStore) -> list[Step]:
    """The cheapest way to obtain every content of ``manifest`` not held yet.

    The pure planner sees the object store as the local files: every held content is a
    possible patch base, whichever version or install it came from.
    """
    local = {f"objects/{sha}": LocalFile(size, sha) for sha, size in objects.held()}
    plan = plan_sync(local, manifest, index.patches, index.blobs)
    steps: dict[tuple[str, bool], Step] = {}
    for action in plan.actions:
        if isinstance(action, Keep | Link | Remove):
            continue
        f = manifest.get(action.path)
        if f is None or objects.has(f.sha256, f.executable):
            continue
        key = (f.sha256, f.executable)
        if key in steps:
            continue
        b3 = index.chunks.blake3_of(f.sha256)
        blob = index.blobs.get(f.sha256, 0)
        if isinstance(action, Copy):
            steps[key] = Step(f.sha256, f.size, f.executable, 0, f.path, blake3=b3)
            continue
        if f.sha256 not in index.blobs:
            raise UntrustedMetadata(f"the delivery index lacks {f.path} ({f.sha256[:12]})")
        if isinstance(action, Patch):
            base = action.steps[0].base_sha256  # a held object, or the empty content
            cost = sum(p.size for p in action.steps)
            steps[key] = Step(
                f.sha256, f.size, f.executable, cost, f.path, blob, base, action.steps, b3
            )
        else:
            steps[key] = Step(f.sha256, f.size, f.executable, blob, f.path, blob, blake3=b3)
    return sorted(steps.values(), key=lambda s: -s.download_bytes)


class Syncer:
    def __init__(
        self,
        base_url: str,
        target: Path,
        *,
        cache: Path | None = None,
        root: bytes | None = None,
        max_bytes_per_s: int | None = None,
        workers: int = 4,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        min_rate: int = DEFAULT_MIN_RATE,
        on_progress: Progress | None = None,
        on_phase: Phase | None = None,
        checkpoint: Callable[[], None] | None = None,
        install_mode: InstallMode | None = None,
    ) -> None:
        """``timeout_s`` bounds a connection and every gap in a download; ``min_rate``
        (bytes/s) with it the whole of each download (``fetch.Pace``). ``install_mode``
        ("link" or "copy", see ``Install.build_tree``): ``None`` keeps the install's own
        (from its record; "link" for a new one); another than the install's rebuilds it."""
        if install_mode is not None and install_mode not in INSTALL_MODES:
            raise InvalidInput(f"install mode {install_mode!r}: use link or copy")
        self.install_mode = install_mode
        self.base_url = base_url.rstrip("/")
        self.target = target
        self.cache = cache or default_cache(target)
        self.install = Install(target, self.cache)
        try:
            self.objects = ObjectStore(self.cache / "objects")
        except OSError as e:
            raise DiskError(f"cannot create the cache {self.cache}: {e.strerror}") from e
        trust_key = hashlib.sha256(self.base_url.encode()).hexdigest()[:16]
        self.root = root
        self.trust_dir = self.cache / "trust" / trust_key
        self.users = CacheUsers(self.cache)
        self.workers = workers
        # Downloads wait on the network, applying (decoding, patching, hashing) on a CPU:
        # more applies at once than CPUs would only take turns, each holding its file.
        self.apply_slots = threading.BoundedSemaphore(max(1, min(workers, os.cpu_count() or 1)))
        try:
            self.pace = Pace(timeout_s, min_rate)
        except ValueError as e:
            raise InvalidInput(f"{e}: got a timeout of {timeout_s} s, {min_rate} bytes/s") from e
        self.limit = RateLimit(max_bytes_per_s)
        self.on_progress = on_progress
        self.on_phase = on_phase or (lambda phase: None)
        self.checkpoint = checkpoint or (lambda: None)

    def resolve(self, image: str, branch: str) -> tuple[dict[str, Any], Manifest, DeliveryIndex]:
        """The verified pointer, manifest and delivery index a branch names now."""
        check_path(f"branches/{image}/{branch}.json")
        fetcher = Fetcher(self.base_url, self.limit, pace=self.pace)
        try:
            with metadata_lock(self.trust_dir):
                trusted = TrustedTargets(self.base_url, self.trust_dir, self.root, fetcher=fetcher)
                return self._resolve(trusted, image, branch)
        finally:
            fetcher.close()

    def _resolve(
        self, trusted: TrustedTargets, image: str, branch: str
    ) -> tuple[dict[str, Any], Manifest, DeliveryIndex]:
        pointer_what = f"the branch pointer of {image}/{branch}"
        try:
            pointer = json.loads(
                trusted.fetch(f"branches/{image}/{branch}.json", what=pointer_what)
            )
            manifest_id = pointer["manifest"]
            check_path(f"manifests/{manifest_id}.json")
        except (ValueError, KeyError, TypeError) as e:
            raise UntrustedMetadata(f"{pointer_what} is malformed: {e}") from e
        raw = trusted.fetch(
            f"manifests/{manifest_id}.json", what=f"the file list (manifest) of {image}/{branch}"
        )
        manifest = Manifest.from_json(raw)
        if manifest.id != manifest_id:
            raise IntegrityError(f"the manifest of {image}/{branch}", manifest_id, manifest.id)
        raw = trusted.fetch(
            f"delivery/{manifest_id}.json", what=f"the delivery index of {image}/{branch}"
        )
        index = DeliveryIndex.from_bytes(raw)
        if index.manifest_id != manifest_id:
            raise InvalidInput(f"the delivery index of {manifest_id} names {index.manifest_id}")
        return pointer, manifest, index

    def sync(self, image: str, branch: str, *, force_rebuild: bool = False) -> SyncReport:
        """Raises DiskError when the disk refuses a write, and any other error of ours
        when the content cannot be had; each says whether the install was left as it
        was (it is, unless the error came after the switch) and whether to retry."""
        before = self.install.current_name()
        try:
            # The lock inside: a disk that refuses its lock file is a DiskError too.
            watch = Stopwatch()
            with self.install.locked():
                with self.users.using():
                    report, switched = self._sync(image, branch, force_rebuild, watch)
                if switched:  # the previous tree's objects may be garbage now
                    with watch("collect"):
                        report.collected_objects = self.collect_garbage()
                report.timings = watch.rounded()
                return report
        except OSError as e:
            error = DiskError(
                f"cannot write under {self.cache} or {self.target.parent}: {e.strerror}",
                errno=e.errno,
            )
            raise explained(error, self._outcome(before)) from e
        except Interrupted:
            raise  # asked for: the player knows, and the install is as it was
        except ChangeoverError as e:
            raise explained(e, self._outcome(before)) from None

    def _outcome(self, before: str | None) -> str:
        """What became of the install, for an error's message."""
        record = self.install.record() or {}
        version = f"version {record['version']}" if "version" in record else None
        if self.install.current_name() != before:
            return f"{self.target} was updated to {version or 'a new version'}"
        if before is None:
            return f"{self.target} was left as it was (not installed)"
        return f"{self.target} was left as it was ({version or 'its current version'})"

    def _sync(
        self, image: str, branch: str, force_rebuild: bool, watch: Stopwatch
    ) -> tuple[SyncReport, bool]:
        """The report, and whether a new tree was switched in."""
        started = time.monotonic()
        self.install.check_managed()
        self.install.cleanup()
        patching.preload()  # while the signed metadata is on its way
        with watch("resolve"):
            pointer, manifest, index = self.resolve(image, branch)
        current = self.install.current_manifest()
        installed_mode = (self.install.record() or {}).get("install_mode", "link")
        mode: InstallMode = self.install_mode or ("copy" if installed_mode == "copy" else "link")
        report = SyncReport(
            image=image,
            branch=branch,
            version=int(pointer.get("version", 0)),
            label=pointer.get("label"),
            manifest=manifest.id,
            files=len(manifest),
            total_bytes=manifest.total_bytes,
            downloaded_bytes=0,
            fetched_blobs=0,
            applied_patches=0,
            reused_objects=0,
            already_current=current is not None and current.id == manifest.id,
            seconds=0.0,
        )
        record = {
            "base_url": self.base_url,
            "image": image,
            "branch": branch,
            **pointer,
            "install_mode": mode,
        }
        if report.already_current and mode == installed_mode and not force_rebuild:
            self.install.write_record({**record, "switch": self.install.switcher.kind})
            report.seconds = time.monotonic() - started
            return report, False

        with watch("plan"):
            steps = plan_steps(manifest, index, self.objects)
        total = sum(s.download_bytes for s in steps)
        self.on_phase("downloading")
        fetcher = Fetcher(self.base_url, self.limit, on_bytes=self._progress(total), pace=self.pace)
        try:
            with watch("obtain"):
                with self.objects.batch():
                    with ThreadPoolExecutor(self.workers) as pool:
                        obtain = functools.partial(self._obtain, fetcher, watch=watch)
                        results = list(pool.map(obtain, steps))
                    pool_done = time.monotonic()
                watch.add("commit", time.monotonic() - pool_done)  # the batch's last group
        finally:
            fetcher.close()
        report.downloaded_bytes = sum(results)
        report.fetched_blobs = sum(1 for s in steps if s.download_bytes and not s.chain)
        report.applied_patches = sum(1 for s in steps if s.chain)
        report.reused_objects = len(manifest.blob_hashes()) - report.fetched_blobs
        report.reused_objects -= report.applied_patches

        self.on_phase("installing")
        with watch("install"):
            tree = self.install.build_tree(manifest, self.objects, mode=mode, previous=current)
            self.install.switch(tree, record, manifest=manifest, previous=current)
        report.seconds = time.monotonic() - started
        return report, True

    def _progress(self, total: int) -> Callable[[int], None] | None:
        callback = self.on_progress
        if callback is None:
            return None
        return lambda n: callback(n, total)

    def _obtain(self, fetcher: Fetcher, step: Step, watch: Stopwatch) -> int:
        """Put one content into the object store; returns the bytes downloaded."""
        self.checkpoint()
        if step.download_bytes == 0:
            with watch.limited("apply", self.apply_slots):
                self.objects.add_variant(
                    step.sha256, step.executable, blake3=step.blake3, name=step.name
                )
            return 0
        if step.chain:
            received = [0]
            try:
                self._patch(fetcher, step, received, watch)
            except UntrustedMetadata:
                raise  # the signed digests disagree: the blob would be refused the same way
            except (IntegrityError, InvalidInput, RemoteError, NotFound):
                pass  # a bad or missing patch is no reason to fail: the blob is always there
            else:
                return received[0]
            return received[0] + self._blob(fetcher, step, watch)
        return self._blob(fetcher, step, watch)

    def _part(self, name: str) -> Path:
        """Where this install keeps a download in progress. Named for the install: two
        syncs of different installs in one cache may fetch the same blob at once, and
        would append to one file; a paused sync resumes its own."""
        return self.objects.part_path(f"{self.install.key}.{name}")

    def _blob(self, fetcher: Fetcher, step: Step, watch: Stopwatch) -> int:
        rel = f"blobs/{step.sha256[:2]}/{step.sha256}"
        part = self._part(f"{step.sha256}.zst")
        received = 0
        for attempt in range(2):
            with watch("fetch"):
                received += fetcher.download(rel, part, step.blob_bytes, name=step.name)
            try:
                with watch.limited("apply", self.apply_slots):
                    self.objects.add_from_zstd(
                        part,
                        step.sha256,
                        step.size,
                        step.executable,
                        blake3=step.blake3,
                        name=step.name,
                    )
            except UntrustedMetadata:
                raise  # the same bytes again would prove the same contradiction
            except IntegrityError:
                if attempt == 1:
                    raise
                continue  # the part file is gone: one fresh download before giving up
            return received
        return received

    def _patch(self, fetcher: Fetcher, step: Step, received: list[int], watch: Stopwatch) -> None:
        """Apply the chain from a held base; each intermediate is verified by its hash."""
        assert step.base_sha256 is not None
        source = self.objects.find(step.base_sha256)
        if source is None:
            raise IntegrityError("patch base vanished", step.base_sha256, "missing")
        scratch: list[Path] = []
        try:
            for n, ref in enumerate(step.chain):
                # A method this launcher does not know is refused before its bytes are
                # fetched (the planner skips such patches; a chain is checked anyway).
                patching.check_method(ref.method, ref.path)
                part = self._part(f"{ref.sha256}.patch")
                scratch.append(part)
                with watch("fetch"):
                    received[0] += fetcher.download(
                        ref.path, part, ref.size, name=f"a patch of {step.name}"
                    )
                with watch.limited("apply", self.apply_slots):
                    got = _file_sha256(part)
                    if got != ref.sha256:
                        what = f"a patch of {step.name} ({ref.path})"
                        raise IntegrityError(what, ref.sha256, got)
                    if n == len(step.chain) - 1:
                        self._apply_last(step, ref, source, part)
                        break
                    source = self._apply_intermediate(ref, source, part)
                    scratch.append(source)
        finally:
            for path in scratch:
                path.unlink(missing_ok=True)

    def _apply_last(self, step: Step, ref: PatchEntry, source: Path, part: Path) -> None:
        """Decoded straight into the object store, hashed as it is written: the object
        appears only if its size and hash match (an HDiffPatch result, whole in memory,
        is hashed while it is written, by the writer alone)."""
        whole = patching.whole_in_memory(ref.method)
        with self.objects.writer(
            step.sha256, step.size, step.executable, blake3=step.blake3, name=step.name
        ) as obj:
            patching.apply(
                ref.method,
                source,
                part,
                obj,
                expected_size=step.size,
                expected_sha256=step.sha256 if whole else None,
                sink_checks=True,
            )

    def _apply_intermediate(self, ref: PatchEntry, source: Path, part: Path) -> Path:
        """An intermediate's size is not in the manifest: the patch header bounds it and
        the hash check after applying vouches for it."""
        out = self._part(f"{ref.target_sha256}.patched")
        try:
            with open(out, "wb") as sink:
                patching.apply(
                    ref.method,
                    source,
                    part,
                    sink,
                    expected_size=patching.new_size(ref.method, part),
                    expected_sha256=ref.target_sha256,
                )
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        return out

    def collect_garbage(self) -> int | None:
        """Delete the objects no install references, if no other sync or launcher uses
        the cache now (``CacheUsers``); returns how many, or ``None`` when skipped (the
        other user collects when it ends)."""
        with self.users.alone() as alone:
            if not alone:
                return None
            return self.objects.collect_garbage(self._referenced())

    def _referenced(self) -> set[str]:
        """Every content any install in this cache still points at."""
        keep: set[str] = set()
        for manifest_file in (self.cache / "trees").glob("*/*.manifest.json"):
            try:
                keep |= Manifest.from_json(manifest_file.read_bytes()).blob_hashes()
            except InvalidInput:
                continue
        return keep

    def verify(self) -> tuple[Manifest, Any]:
        """Hash the install against its manifest."""
        manifest = self.install.current_manifest()
        tree = self.install.current_tree()
        if manifest is None or tree is None:
            raise InvalidInput(f"{self.target} is not a changeover install")
        return manifest, verify_tree(self.target, manifest)

    def repair(self) -> tuple[Any, SyncReport]:
        """Re-fetch the objects of whatever verification finds damaged or missing, and
        rebuild the tree (the player's files carried over: ``carry_player_files``)."""
        try:
            with self.install.locked():
                return self._repair()
        except OSError as e:
            raise DiskError(f"cannot repair {self.target}: {e.strerror}", errno=e.errno) from e

    def _repair(self) -> tuple[Any, SyncReport]:
        manifest, report = self.verify()
        for rel in report.modified + report.missing:
            entry = manifest.get(rel)
            if entry is not None and entry.link is None:
                # In link mode a damaged file is its object (one inode): that object is
                # fetched again. A copy damaged alone leaves its object intact: kept.
                self.objects.remove_damaged(entry.sha256, entry.size)
        record = self.install.record() or {}
        image, branch = record.get("image"), record.get("branch")
        if not isinstance(image, str) or not isinstance(branch, str):
            raise InvalidInput(f"{self.target} has no install record; run sync again")
        return report, self.sync(image, branch, force_rebuild=True)


def explained(error: ChangeoverError, outcome: str) -> ChangeoverError:
    """``error`` with what became of the install (``outcome``) and whether retrying can
    help added to its message (and as facts ``install`` and ``retry``)."""
    if isinstance(error, RemoteError) and error.facts.get("misconfigured"):
        advice = "check the content URL in the launcher's configuration"  # says it already
        retry = False
    elif isinstance(error, RemoteError):
        advice = "retry later: the server or the network failed (what arrived is kept)"
        retry = True
    elif isinstance(error, DiskError):
        advice = "free some space or fix the permissions, then retry"
        retry = True
    elif isinstance(error, UntrustedMetadata):
        advice = (
            "retrying will not help until the publisher fixes what the server serves;"
            " if this persists, tell them"
        )
        retry = False
    elif isinstance(error, IntegrityError):
        advice = (
            "the server sent damaged content: retry later; if this persists, tell the publisher"
        )
        retry = True
    else:
        advice = "retrying the same command will not help"
        retry = False
    if "retry" not in error.message and "will not help" not in error.message:
        error.message = f"{error.message}; {outcome}; {advice}"
    else:
        error.message = f"{error.message}; {outcome}"
    error.args = (error.message,)
    error.facts.update(install=outcome, retry=retry)
    return error


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
