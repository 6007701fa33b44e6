"""Bring an install to what a branch points at, downloading as little as possible.

The flow: refresh signed metadata → read the branch pointer, the manifest and the delivery
index (all verified by TUF) → plan, per content the install lacks, the cheapest source
(an object already held by any install in the cache, a patch from a held object, or the
blob) → fetch in parallel, verifying every byte → build a complete tree → switch ``DIR``
to it atomically → drop what no install needs any more. A run killed at any point is
resumed by the next: verified objects stay, partial downloads continue by range request.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from changeover.content.delivery import DeliveryIndex
from changeover.content.manifest import Manifest, check_path
from changeover.content.patch import apply_patch, read_header
from changeover.content.patch_index import PatchEntry
from changeover.content.plan import Copy, Keep, Link, LocalFile, Patch, Remove, plan_sync
from changeover.errors import DiskError, IntegrityError, InvalidInput, UntrustedMetadata
from changeover.launcher.fetch import Fetcher, RateLimit
from changeover.launcher.install import Install, default_cache, verify_tree
from changeover.launcher.objects import ObjectStore
from changeover.launcher.trust import TrustedTargets

Progress = Callable[[int, int], None]
"""Called with (bytes just received, total bytes planned)."""


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Step:
    """How one missing content is obtained: from a held variant, a patch chain, or a blob."""

    sha256: str
    size: int
    executable: bool
    download_bytes: int
    base_sha256: str | None = None
    chain: tuple[PatchEntry, ...] = ()
    blake3: str | None = None
    """The content's BLAKE3 from the signed index, which checks it faster than SHA-256."""


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
        if isinstance(action, Copy):
            steps[key] = Step(f.sha256, f.size, f.executable, 0, blake3=b3)
        elif isinstance(action, Patch):
            base = action.base_path.removeprefix("objects/")
            cost = sum(p.size for p in action.steps)
            steps[key] = Step(f.sha256, f.size, f.executable, cost, base, action.steps, b3)
        else:
            if f.sha256 not in index.blobs:
                raise UntrustedMetadata(f"the delivery index lacks {f.path} ({f.sha256[:12]})")
            steps[key] = Step(f.sha256, f.size, f.executable, index.blobs[f.sha256], blake3=b3)
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
        timeout_s: float = 30.0,
        on_progress: Progress | None = None,
    ) -> None:
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
        self.workers = workers
        self.timeout_s = timeout_s
        self.limit = RateLimit(max_bytes_per_s)
        self.on_progress = on_progress

    def resolve(self, image: str, branch: str) -> tuple[dict[str, Any], Manifest, DeliveryIndex]:
        """The verified pointer, manifest and delivery index a branch names now."""
        check_path(f"branches/{image}/{branch}.json")
        trusted = TrustedTargets(self.base_url, self.trust_dir, self.root)
        try:
            pointer = json.loads(trusted.fetch(f"branches/{image}/{branch}.json"))
            manifest_id = pointer["manifest"]
        except (ValueError, KeyError, TypeError) as e:
            raise UntrustedMetadata(f"branch pointer {image}/{branch} is malformed: {e}") from e
        manifest = Manifest.from_json(trusted.fetch(f"manifests/{manifest_id}.json"))
        if manifest.id != manifest_id:
            raise IntegrityError(f"manifest of {image}/{branch}", manifest_id, manifest.id)
        index = DeliveryIndex.from_bytes(trusted.fetch(f"delivery/{manifest_id}.json"))
        if index.manifest_id != manifest_id:
            raise InvalidInput(f"the delivery index of {manifest_id} names {index.manifest_id}")
        return pointer, manifest, index

    def sync(self, image: str, branch: str, *, force_rebuild: bool = False) -> SyncReport:
        """Raises DiskError when the disk refuses a write; the install is then unchanged."""
        try:
            return self._sync(image, branch, force_rebuild)
        except OSError as e:
            current = self.install.record() or {}
            was = f"version {current['version']}" if "version" in current else "not installed"
            raise DiskError(
                f"cannot write under {self.cache} or {self.target.parent}: {e.strerror};"
                f" {self.target} is unchanged ({was})",
                errno=e.errno,
            ) from e

    def _sync(self, image: str, branch: str, force_rebuild: bool) -> SyncReport:
        started = time.monotonic()
        self.install.check_managed()
        self.install.cleanup()
        pointer, manifest, index = self.resolve(image, branch)
        current = self.install.current_manifest()
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
        record = {"base_url": self.base_url, "image": image, "branch": branch, **pointer}
        if report.already_current and not force_rebuild:
            self.install.switch(self.install.current_tree() or Path(), record)
            report.seconds = time.monotonic() - started
            return report

        steps = plan_steps(manifest, index, self.objects)
        total = sum(s.download_bytes for s in steps)
        fetcher = Fetcher(
            self.base_url, self.limit, on_bytes=self._progress(total), timeout_s=self.timeout_s
        )
        try:
            with ThreadPoolExecutor(self.workers) as pool:
                results = list(pool.map(lambda s: self._obtain(fetcher, s), steps))
        finally:
            fetcher.close()
        report.downloaded_bytes = sum(results)
        report.fetched_blobs = sum(1 for s in steps if s.download_bytes and not s.chain)
        report.applied_patches = sum(1 for s in steps if s.chain)
        report.reused_objects = len(manifest.blob_hashes()) - report.fetched_blobs
        report.reused_objects -= report.applied_patches

        tree = self.install.build_tree(manifest, self.objects, index.chunks)
        self.install.switch(tree, record)
        self.objects.collect_garbage(self._referenced())
        report.seconds = time.monotonic() - started
        return report

    def _progress(self, total: int) -> Callable[[int], None] | None:
        callback = self.on_progress
        if callback is None:
            return None
        return lambda n: callback(n, total)

    def _obtain(self, fetcher: Fetcher, step: Step) -> int:
        """Put one content into the object store; returns the bytes downloaded."""
        if step.download_bytes == 0:
            self.objects.add_variant(step.sha256, step.executable, blake3=step.blake3)
            return 0
        if step.chain:
            received = [0]
            try:
                self._patch(fetcher, step, received)
            except (IntegrityError, InvalidInput):
                pass  # a bad patch is no reason to fail: the blob is always there
            else:
                return received[0]
            return received[0] + self._blob(fetcher, step)
        return self._blob(fetcher, step)

    def _blob(self, fetcher: Fetcher, step: Step) -> int:
        rel = f"blobs/{step.sha256[:2]}/{step.sha256}"
        part = self.objects.part_path(f"{step.sha256}.zst")
        received = 0
        for attempt in range(2):
            received += fetcher.download(rel, part, step.download_bytes)
            try:
                self.objects.add_from_zstd(
                    part, step.sha256, step.size, step.executable, blake3=step.blake3
                )
            except IntegrityError:
                if attempt == 1:
                    raise
                continue  # the part file is gone: one fresh download before giving up
            return received
        return received

    def _patch(self, fetcher: Fetcher, step: Step, received: list[int]) -> None:
        """Apply the chain from a held base; each intermediate is verified by its hash."""
        assert step.base_sha256 is not None
        source = self.objects.find(step.base_sha256)
        if source is None:
            raise IntegrityError("patch base vanished", step.base_sha256, "missing")
        scratch: list[Path] = []
        try:
            for n, ref in enumerate(step.chain):
                last = n == len(step.chain) - 1
                part = self.objects.part_path(f"{ref.sha256}.patch")
                received[0] += fetcher.download(ref.path, part, ref.size)
                scratch.append(part)
                if hashlib.sha256(part.read_bytes()).hexdigest() != ref.sha256:
                    raise IntegrityError(f"patch {ref.path}", ref.sha256, "other bytes")
                if last:
                    # Decoded straight into the object store, hashed as it is written: the
                    # object appears only if its size and hash match.
                    with self.objects.writer(
                        step.sha256, step.size, step.executable, blake3=step.blake3
                    ) as obj:
                        apply_patch(source, part, obj, expected_size=step.size)
                    break
                # An intermediate's size is not in the manifest: the patch header bounds it
                # and the hash check after applying vouches for it.
                out = self.objects.part_path(f"{ref.target_sha256}.patched")
                scratch.append(out)
                with open(out, "wb") as sink:
                    apply_patch(
                        source,
                        part,
                        sink,
                        expected_size=_new_size(part),
                        expected_sha256=ref.target_sha256,
                    )
                source = out
        finally:
            for path in scratch:
                path.unlink(missing_ok=True)

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
        return manifest, verify_tree(self.target, manifest, self.install.current_chunks())

    def repair(self) -> tuple[Any, SyncReport]:
        """Re-fetch whatever verification finds damaged, and rebuild the tree."""
        manifest, report = self.verify()
        for rel in report.modified + report.missing:
            entry = manifest.get(rel)
            if entry is not None:
                self.objects.remove(entry.sha256)  # a damaged link damaged its object
        record = self.install.record() or {}
        image, branch = record.get("image"), record.get("branch")
        if not isinstance(image, str) or not isinstance(branch, str):
            raise InvalidInput(f"{self.target} has no install record; run sync again")
        return report, self.sync(image, branch, force_rebuild=True)


def _new_size(patch: Path) -> int:
    with open(patch, "rb") as f:
        return read_header(f).new_size
