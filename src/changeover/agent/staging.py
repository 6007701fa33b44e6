"""Staging image versions on a host, several side by side, sharing unchanged files.

    work/objects/<sha256>.<mode>   one verified copy of each content (per file mode)
    work/versions/<manifest_id>/   a staged version: each file a hard link into objects/
    work/versions/.tmp-<id>-…      a version being built (a crash leaves it; it is swept)

``stage`` fetches the manifest and checks it hashes to its id, then for each file links
the object if the host already has that content (from any version); else, when the
version's patch index (``patches/index/<manifest_id>.json``, written by
``content.publish``) offers a patch from a content the host holds, it fetches that patch
and applies it to the local copy; else it fetches the blob (a zstd frame). Either way the
SHA-256 of every byte written is checked before the file moves into ``objects/``, so an
unsigned index or a bad patch can cost bytes, never correctness (a failed patch falls
back to the blob). The version is built in a temporary directory and renamed into place
in one step, so a version directory that exists is complete. ``stage`` returns how many
bytes it downloaded, which the agent logs.

Fetching is behind ``Fetcher``: staging only needs "the manifest", "the patch index",
"the bytes of this blob" and "the bytes of this patch".

Hard links share one inode: a game must treat its version directory as read-only (it
writes to ``CHANGEOVER_STATE_DIR``), or a change would show in every version holding the
same file. Objects are keyed by hash *and* mode, since a mode lives on the inode too.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

from changeover.content import patching
from changeover.content.manifest import FileEntry, Manifest, check_sha256
from changeover.content.patch_index import EMPTY_SHA256, PatchEntry, PatchIndex
from changeover.errors import ChangeoverError, IntegrityError, InvalidInput, NotFound, RemoteError
from changeover.launcher.fetch import CHUNK, Pace, RateLimit, compressed_bound
from changeover.launcher.fetch import Fetcher as Downloader

DIR_MODE = 0o755
log = logging.getLogger("changeover.agent.staging")


class Fetcher(Protocol):
    """Where staging gets content: a manifest by id, a blob (zstd frame) by hash. Each
    download is told the most bytes it may take, which also bounds how long it may take."""

    def manifest(self, manifest_id: str) -> bytes: ...

    def blob(self, sha256: str, max_bytes: int) -> Iterator[bytes]: ...

    def patch_index(self, manifest_id: str) -> bytes | None:
        """The version's patch index, or None when it has none."""
        ...

    def patch(self, path: str, max_bytes: int) -> Iterator[bytes]:
        """A patch by its path in the content tree (``patches/ab/<base>-<target>.zpatch``)."""
        ...


METADATA_MAX_BYTES = 256 << 20
"""The most a manifest or patch index may take (their size is not signed anywhere the
agent reads first): a build of a million files has a manifest of about 150 MB."""


class HttpFetcher:
    """The content tree over HTTP: the control plane's ``/content`` or any static mirror.

    Downloads go through the launcher's downloader, so an agent's staging obeys the same
    rules as a player's install: bounded in size, an overall deadline per attempt from that
    size and a minimum rate (a server trickling bytes cannot stall staging for days),
    resumed and retried. Each lands in a temporary file in ``scratch`` first.
    """

    def __init__(self, base_url: str, scratch: Path, *, pace: Pace | None = None) -> None:
        self.scratch = scratch
        self.fetcher = Downloader(base_url, RateLimit(None), pace=pace or Pace())

    def close(self) -> None:
        self.fetcher.close()

    def _get(self, rel: str, max_bytes: int) -> Iterator[bytes]:
        self.scratch.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.scratch, prefix=".tmp-download-")
        os.close(fd)
        part = Path(name)
        try:
            try:
                self.fetcher.download(rel, part, max_bytes)
            except RemoteError as e:
                if e.facts.get("status") in (403, 404, 410):
                    raise NotFound(f"the content tree has no {rel} ({e})") from e
                raise
            with open(part, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
        finally:
            part.unlink(missing_ok=True)

    def manifest(self, manifest_id: str) -> bytes:
        return b"".join(self._get(f"manifests/{manifest_id}.json", METADATA_MAX_BYTES))

    def blob(self, sha256: str, max_bytes: int) -> Iterator[bytes]:
        return self._get(f"blobs/{sha256[:2]}/{sha256}", max_bytes)

    def patch_index(self, manifest_id: str) -> bytes | None:
        try:
            return b"".join(self._get(f"patches/index/{manifest_id}.json", METADATA_MAX_BYTES))
        except NotFound:
            return None

    def patch(self, path: str, max_bytes: int) -> Iterator[bytes]:
        return self._get(path, max_bytes)


class Staging:
    """The versions and objects of one agent work directory."""

    def __init__(self, work: Path) -> None:
        self.downloaded = 0
        """Bytes fetched over the network so far (manifests, indexes, blobs, patches)."""
        self.objects = work / "objects"
        self.versions = work / "versions"
        for d in (self.objects, self.versions):
            d.mkdir(parents=True, exist_ok=True)

    def version_dir(self, manifest_id: str) -> Path:
        return self.versions / check_sha256(manifest_id, "manifest id")

    def is_staged(self, manifest_id: str) -> bool:
        return self.version_dir(manifest_id).is_dir()

    def staged(self) -> list[str]:
        return sorted(p.name for p in self.versions.iterdir() if not p.name.startswith("."))

    def sweep(self) -> None:
        """Remove half-built versions and half-written objects a crash left behind."""
        for p in self.versions.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.objects.glob(".tmp-*"):
            p.unlink(missing_ok=True)

    def stage(self, fetcher: Fetcher, manifest_id: str) -> Path:
        """Make ``versions/<manifest_id>`` complete and verified; returns its path.

        Raises:
            IntegrityError: the manifest or a blob does not match its hash.
            NotFound / RemoteError: the content could not be fetched.
            InvalidInput: the manifest is malformed or names an unsafe path.
        """
        target = self.version_dir(manifest_id)
        if target.is_dir():
            return target
        raw = fetcher.manifest(manifest_id)
        got = hashlib.sha256(raw).hexdigest()
        if got != manifest_id:
            raise IntegrityError(f"manifest {manifest_id}", manifest_id, got)
        manifest = Manifest.from_json(raw)
        self.downloaded += len(raw)
        patches = self._patch_index(fetcher, manifest_id)
        tmp = Path(tempfile.mkdtemp(dir=self.versions, prefix=f".tmp-{manifest_id[:12]}-"))
        try:
            for entry in manifest:
                path = tmp / entry.path
                path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
                if entry.link is not None:
                    os.symlink(entry.link, path)
                else:
                    os.link(self._object(fetcher, entry, patches), path)
            tmp.chmod(DIR_MODE)
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():  # not "someone else staged it first"
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def _patch_index(self, fetcher: Fetcher, manifest_id: str) -> PatchIndex | None:
        # Only an optimisation: any problem with it means "fetch blobs", never a failure.
        try:
            raw = fetcher.patch_index(manifest_id)
            if raw is None:
                return None
            self.downloaded += len(raw)
            index = PatchIndex.from_json(raw)
        except (ChangeoverError, OSError) as e:
            log.info("no usable patch index for %s (%s): fetching whole files", manifest_id, e)
            return None
        return index if index.manifest_id == manifest_id else None

    def _held(self, sha256: str) -> Path | None:
        """A verified local copy of this content, in any file mode; the empty content
        always (the base of a fresh patch: ``content.patch_index.EMPTY_SHA256``)."""
        if sha256 == EMPTY_SHA256:
            empty = self.objects / _EMPTY_NAME
            if not empty.exists():
                empty.touch()
            return empty
        return next((p for p in self.objects.glob(f"{sha256}.*") if p.is_file()), None)

    def _object(self, fetcher: Fetcher, entry: FileEntry, patches: PatchIndex | None) -> Path:
        obj = self.objects / f"{entry.sha256}.{entry.mode:o}"
        if obj.exists():
            return obj
        held = self._held(entry.sha256) if entry.size else None
        if held is not None:  # the same content under another mode: copy, nothing to fetch
            return self._install(entry, obj, partial(_copy, held))
        for p in patches.for_target(entry.sha256) if patches is not None and entry.size else ():
            base = self._held(p.base_sha256)
            if base is None:
                continue
            try:
                return self._install(entry, obj, partial(self._patch, fetcher, p, base))
            except (IntegrityError, InvalidInput, NotFound, RemoteError) as e:
                log.warning("patch for %s failed (%s): fetching the whole file", entry.path, e)
        return self._install(entry, obj, partial(self._blob, fetcher, entry))

    def _install(self, entry: FileEntry, obj: Path, write: Callable[[_Checked], None]) -> Path:
        """Write ``entry``'s bytes with ``write`` to a temporary file, check their SHA-256,
        then move it to ``obj``: an object that exists is always complete and verified."""
        fd, tmp_name = tempfile.mkstemp(dir=self.objects, prefix=".tmp-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                checked = _Checked(out, entry)
                write(checked)
                out.flush()
                os.fsync(out.fileno())
            got = checked.sha256.hexdigest()
            if checked.written != entry.size or got != entry.sha256:
                raise IntegrityError(f"{entry.path}", entry.sha256, got)
            tmp.chmod(entry.mode)
            os.replace(tmp, obj)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return obj

    def _blob(self, fetcher: Fetcher, entry: FileEntry, out: _Checked) -> None:
        if entry.size == 0:
            return
        d = zstandard.ZstdDecompressor().decompressobj()
        for chunk in fetcher.blob(entry.sha256, compressed_bound(entry.size)):
            self.downloaded += len(chunk)
            try:
                data = d.decompress(chunk)
            except zstandard.ZstdError as e:
                raise IntegrityError(
                    f"blob of {entry.path} is not a zstd frame ({e})", entry.sha256, "?"
                ) from e
            out.write(data)

    def _patch(self, fetcher: Fetcher, p: PatchEntry, base: Path, out: _Checked) -> None:
        """Fetch patch ``p`` (checked against its own size and hash), apply it to ``base``.

        A method this agent does not know is refused before anything is fetched."""
        patching.check_method(p.method, p.path)
        with tempfile.TemporaryFile(dir=self.objects, prefix=".tmp-patch-") as f:
            h = hashlib.sha256()
            size = 0
            for chunk in fetcher.patch(p.path, p.size):
                self.downloaded += len(chunk)
                size += len(chunk)
                if size > p.size:
                    raise IntegrityError(
                        f"patch {p.path}: more than its {p.size} bytes", p.sha256, "oversized"
                    )
                h.update(chunk)
                f.write(chunk)
            if h.hexdigest() != p.sha256:
                raise IntegrityError(f"patch {p.path}", p.sha256, h.hexdigest())
            f.seek(0)
            # An HDiffPatch result is whole in memory: checked before a byte is written.
            whole = patching.whole_in_memory(p.method)
            patching.apply(
                p.method,
                base,
                f,
                out,
                expected_size=out.entry.size,
                expected_sha256=out.entry.sha256 if whole else None,
            )

    def prune(self, keep: Iterable[str]) -> list[str]:
        """Remove staged versions not in ``keep``, then objects no version links to."""
        keep = set(keep)
        removed = [v for v in self.staged() if v not in keep]
        for v in removed:
            shutil.rmtree(self.versions / v, ignore_errors=True)
        for obj in self.objects.iterdir():
            st = obj.stat()
            # Young objects may be about to be linked by a version being staged right now.
            unused = st.st_nlink <= 1 and time.time() - st.st_mtime > 60
            if unused and not obj.name.startswith(".") and obj.name != _EMPTY_NAME:
                obj.unlink(missing_ok=True)
        return removed


_EMPTY_NAME = f"{EMPTY_SHA256}.empty"
"""The empty content, a fresh patch's base: never linked into a version, never pruned."""


def retained(
    staged: Iterable[str],
    wanted: Iterable[str],
    unwanted_since: Mapping[str, float],
    now: float,
    keep_s: float,
) -> tuple[set[str], dict[str, float]]:
    """Which staged versions to keep: the wanted ones, and the others for ``keep_s`` after
    nothing wanted them any more (a finished job's old build stays for a quick revert).
    Returns the versions to keep and the new ``unwanted_since`` (version -> since when)."""
    wanted = set(wanted)
    since = {v: unwanted_since.get(v, now) for v in staged if v not in wanted}
    keep = wanted | {v for v, at in since.items() if now - at < keep_s}
    return keep, {v: at for v, at in since.items() if v in keep}


class _Checked:
    """A sink that hashes and counts what it writes, and refuses more than the entry's size
    (a bad blob or patch must never fill the disk)."""

    def __init__(self, out: BinaryIO, entry: FileEntry) -> None:
        self.out = out
        self.entry = entry
        self.sha256 = hashlib.sha256()
        self.written = 0

    def write(self, data: bytes, /) -> None:
        self.written += len(data)
        if self.written > self.entry.size:
            raise IntegrityError(
                f"{self.entry.path}: more than its {self.entry.size} bytes",
                self.entry.sha256,
                "oversized",
            )
        self.sha256.update(data)
        self.out.write(data)


def _copy(src: Path, out: _Checked) -> None:
    with open(src, "rb") as f:
        while chunk := f.read(1 << 20):
            out.write(chunk)


class Stager:
    """Stages wanted versions on a background thread, so a long download never delays the
    agent's heartbeat. A failed version is retried after ``retry_s``."""

    def __init__(self, staging: Staging, fetcher: Fetcher, *, retry_s: float = 5.0) -> None:
        self.staging = staging
        self.fetcher = fetcher
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self._wanted: list[str] = []
        self._errors: dict[str, tuple[str, float]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stager", daemon=True)

    def start(self) -> None:
        self.staging.sweep()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def want(self, manifest_ids: Iterable[str], *, only: bool = False) -> None:
        """Stage these versions too; with ``only``, these and no others (the rest are
        forgotten, so a version pruned from disk is not fetched again)."""
        with self._lock:
            ids = list(dict.fromkeys(manifest_ids))
            added = [m for m in ids if m not in self._wanted]
            self._wanted = ids if only else self._wanted + added
        if added:
            self._wake.set()

    def status(self, manifest_id: str) -> tuple[bool, str | None]:
        """(staged, last error)."""
        if self.staging.is_staged(manifest_id):
            return True, None
        self.want([manifest_id])
        with self._lock:
            err = self._errors.get(manifest_id)
        return False, err[0] if err else None

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                todo = [
                    m
                    for m in self._wanted
                    if not self.staging.is_staged(m)
                    and time.monotonic() - self._errors.get(m, ("", -1e9))[1] >= self.retry_s
                ]
            for m in todo:
                if self._stop.is_set():
                    return
                before = self.staging.downloaded
                try:
                    self.staging.stage(self.fetcher, m)
                except ChangeoverError as e:
                    log.warning("staging %s failed: %s", m[:12], e.message)
                    with self._lock:
                        self._errors[m] = (f"staging failed: {e.message}", time.monotonic())
                except OSError as e:
                    log.warning("staging %s failed: %s", m[:12], e)
                    with self._lock:
                        self._errors[m] = (f"staging failed: {e}", time.monotonic())
                else:
                    with self._lock:
                        self._errors.pop(m, None)
                    got = self.staging.downloaded - before
                    log.info("staged version %s (%d bytes downloaded)", m[:12], got)
            self._wake.wait(1.0)
            self._wake.clear()
