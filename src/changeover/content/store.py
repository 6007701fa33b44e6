"""The content tree on a local disk: hash-named, zstd-compressed blobs and manifests.

Layout (everything under ``content/`` is immutable and servable by any static server)::

    content/blobs/ab/abcdef…      zstd frame of the file whose SHA-256 is abcdef…
    content/manifests/<id>.json   a manifest, named by its own hash
    uploads/<sha256>.part         raw bytes of an upload in progress (resumable)

Every blob appears by an atomic rename after its hash was checked and its bytes were
fsynced, so a process killed at any instant leaves either no object or a complete,
verified, durable one; and its directory is fsynced before the call that stored it
returns, so a blob reported as stored also survives a power cut. A torn ``.part`` file is
simply resumed or overwritten by the next upload.

Two ways in, for two kinds of file:

* ``open_upload`` (and ``write_part``, one call of it): a resumable upload. A writer that
  starts at byte 0 hashes and compresses the bytes while they arrive, so a complete
  upload is read once; it also appends them to the ``.part`` file, which exists only so
  that an upload cut short can resume. A writer that resumes at byte N appends, and the
  whole part is read again when complete (resuming is rare; a second pass is simple).
* ``put_blobs``: small files given whole (the batch endpoint). Each is verified on its
  own; the fsyncs of all of them run in parallel, which the filesystem journal turns into
  a few device flushes instead of one per file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import zstandard

from changeover.content.bucket import Bucket
from changeover.content.files import PUBLIC_MODE, atomic_write
from changeover.content.manifest import Manifest, check_sha256
from changeover.errors import Conflict, IntegrityError, InvalidInput, NotFound

CHUNK = 1 << 20
ZSTD_LEVEL = 3
ZSTD_THREADS_FROM = 32 << 20
"""Blobs at least this big get a multi-threaded compressor, if the machine has cores to
spare; smaller ones are cheaper with one thread (a thread pool per blob costs more than it
saves on a small file)."""


BUCKET_THREADS = 8
"""Blobs of one batch put in the bucket at once (each a round trip)."""


def changes_in_place(rel: str) -> bool:
    """Whether a content path is rewritten under the same name (the newest metadata and
    the news feeds); every other one is named by its content and never changes."""
    return rel in ("metadata/timestamp.json", "metadata/root.json") or rel.startswith("news/")


def blob_rel(sha256: str) -> str:
    """Where a blob lives in the content tree."""
    return f"blobs/{sha256[:2]}/{sha256}"


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


ZSTD_THREADS = min(8, max(0, _cores() - 2))
"""Compression threads for a big blob: the cores left once the server's event loop and the
upload's own thread (hashing, writing) have one each. On 2 cores, none: measured there,
zstd's worker threads only add a lag that the last byte of an upload waits for."""
WRITEBACK_EVERY = 8 << 20
"""While a big blob is written, ask the kernel to start writing it back every this many
bytes, so the final fsync finds most of it on disk already (Linux; elsewhere a no-op)."""
SYNC_THREADS = 8
"""fsyncs of one batch run on this many threads: the filesystem journal commits them
together (one device flush for many files) instead of one flush after another."""

_SYNC_POOL = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="store-fsync")
"""Its threads start on first use."""


def _fsync_path(path: Path) -> None:
    """fsync a file or directory by name (for a directory: the names in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_all(paths: Iterable[Path]) -> None:
    todo = list(paths)
    if len(todo) <= 1:
        for p in todo:
            _fsync_path(p)
        return
    # list() re-raises the first failure, after every fsync has run.
    list(_SYNC_POOL.map(_fsync_path, todo))


def _compressor(size: int) -> zstandard.ZstdCompressor:
    # The raw size goes into every frame header (compressobj(size=…), and compress() of a
    # whole buffer), so raw_size() can check a manifest's claimed size without
    # decompressing anything.
    threads = ZSTD_THREADS if size >= ZSTD_THREADS_FROM else 0
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=threads)


def _temp_beside(target: Path) -> tuple[int, Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, PUBLIC_MODE)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, Path(tmp)


class _BlobWriter:
    """Hashes and compresses one blob's bytes as they come, into a temporary file beside
    its final name; ``commit`` verifies, makes it durable, then renames it into place."""

    def __init__(self, target: Path, sha256: str, size: int) -> None:
        self.target, self.sha256, self.size = target, sha256, size
        self.hash = hashlib.sha256()
        self.zstd = _compressor(size).compressobj(size=size)
        fd, self.tmp = _temp_beside(target)
        self.out = os.fdopen(fd, "wb")
        self.received = 0
        self.unflushed = 0

    def write(self, data: bytes | memoryview) -> None:
        self.hash.update(data)
        out = self.zstd.compress(data)
        self.out.write(out)
        self.received += len(data)
        self.unflushed += len(out)
        if self.unflushed >= WRITEBACK_EVERY:
            self.unflushed = 0
            self.out.flush()
            _start_writeback(self.out.fileno())

    def commit(self) -> None:
        """Raises IntegrityError (and leaves nothing) if the bytes do not match the hash."""
        try:
            got = self.hash.hexdigest()
            if got != self.sha256 or self.received != self.size:
                raise IntegrityError("uploaded content", self.sha256, got)
            self.out.write(self.zstd.flush())
            self.out.flush()
            os.fsync(self.out.fileno())  # durable before it is visible
            self.out.close()
            os.replace(self.tmp, self.target)
        except BaseException:
            self.abort()
            raise
        _fsync_path(self.target.parent)  # and the name durable before we say it is stored

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.out.close()
        self.tmp.unlink(missing_ok=True)


def _start_writeback(fd: int) -> None:
    # On Linux, POSIX_FADV_DONTNEED starts asynchronous writeback of the file's dirty pages
    # (and drops the clean ones, which nobody needs until a download reads them).
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


class Upload:
    """One writer's turn at a resumable upload, from ``LocalStore.open_upload``.

    It holds the part file's lock until ``close`` or ``abort``: feed it the bytes that
    follow ``offset`` with ``write``, then ``close`` (which stores the blob once every byte
    is there) or, if the bytes stopped coming, ``abort`` (which keeps what arrived, for a
    later writer to resume). Calls are serialised, so ``abort`` from one thread waits for a
    ``write`` running in another.
    """

    def __init__(
        self,
        store: LocalStore,
        sha256: str,
        size: int,
        part: BinaryIO | None = None,
        writer: _BlobWriter | None = None,
    ) -> None:
        self.store, self.sha256, self.size = store, sha256, size
        self.part, self.writer = part, writer
        self.start = self.offset = size if part is None else part.tell()
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """False once closed, and from the start if the store already had the blob."""
        return self.part is not None

    def write(self, chunks: Iterable[bytes]) -> None:
        """Append chunks; raises InvalidInput (keeping nothing of this turn) past ``size``."""
        with self._lock:
            part = self._open_part()
            for chunk in chunks:
                if self.offset + len(chunk) > self.size:
                    self._discard_turn()
                    raise InvalidInput(
                        f"upload of {self.sha256} sent more than its declared {self.size} bytes",
                        sha256=self.sha256,
                    )
                part.write(chunk)
                if self.writer is not None:
                    self.writer.write(chunk)
                self.offset += len(chunk)

    def close(self) -> int:
        """Store the blob if every byte arrived, else keep the part; returns the offset.

        Raises:
            IntegrityError: every byte arrived and they do not match the hash (the part is
                discarded: the next upload starts from zero).
            Conflict: another writer discarded this upload meanwhile.
        """
        with self._lock:
            if self.part is None:
                return self.offset
            try:
                if self.offset == self.size:
                    self._finish()
                else:
                    self.part.flush()
            finally:
                self._release()
            return self.offset

    def abort(self) -> None:
        """Stop here, keeping the bytes that arrived; never raises."""
        with self._lock:
            if self.part is not None:
                with contextlib.suppress(OSError):
                    self.part.flush()
                self._release()

    # -- internals, called with self._lock held ---------------------------------------------

    def _open_part(self) -> BinaryIO:
        if self.part is None:
            raise InvalidInput(f"upload of {self.sha256} is already closed", sha256=self.sha256)
        return self.part

    def _release(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
        if self.part is not None:
            with contextlib.suppress(OSError):
                self.part.close()  # also releases the lock
            self.part = None

    def _ours(self) -> bool:
        """Whether the part we hold is still the one in the uploads directory."""
        assert self.part is not None
        return os.fstat(self.part.fileno()).st_nlink > 0

    def _discard_turn(self) -> None:
        assert self.part is not None
        self.part.flush()
        self.part.truncate(self.start)
        self.offset = self.start
        if self.start == 0 and self._ours():
            self.store._part(self.sha256).unlink(missing_ok=True)
        self._release()

    def _finish(self) -> None:
        assert self.part is not None
        self.part.flush()
        part_path = self.store._part(self.sha256)
        if self.writer is not None:
            # One pass: the bytes were hashed and compressed as they arrived.
            writer, self.writer = self.writer, None
            try:
                writer.commit()
            except IntegrityError:
                if self._ours():
                    part_path.unlink(missing_ok=True)
                raise
            self.store.blob_stored(self.sha256)
        elif not self._ours():
            # Another writer finished (or discarded) this upload while we held a stale part.
            if self.store.has(self.sha256):
                return
            raise Conflict(
                f"upload of {self.sha256} was restarted by another writer",
                sha256=self.sha256,
                offset=self.store.upload_offset(self.sha256),
            )
        else:
            # A resumed upload: its first bytes came in an earlier turn, read them all again.
            try:
                with open(part_path, "rb") as f:
                    self.store._store_stream(f, self.sha256, self.size)
            except IntegrityError:
                part_path.unlink(missing_ok=True)
                raise
        if self._ours():
            part_path.unlink(missing_ok=True)


class LocalStore:
    """Blobs and manifests in a directory; see the module docstring for the layout."""

    def __init__(self, root: Path, bucket: Bucket | None = None) -> None:
        self.root = root
        self.content = root / "content"
        self.uploads = root / "uploads"
        self.bucket = bucket
        """Where the content tree lives when there is one (``content.bucket``); then the
        local ``content/`` is a cache of it."""
        for d in (self.content / "blobs", self.content / "manifests", self.uploads):
            d.mkdir(parents=True, exist_ok=True)

    # -- the content tree, locally and in the bucket ------------------------------------------

    def published(self, rel: str) -> None:
        """``content/rel`` was written locally: put it in the bucket, if there is one,
        before the caller goes on (what is written is then visible to every replica)."""
        if self.bucket is not None:
            self.bucket.put_file(rel, self.content / rel)

    def write_content(self, rel: str, data: bytes) -> None:
        """Write ``content/rel`` (atomically) and publish it."""
        atomic_write(self.content / rel, data)
        self.published(rel)

    def place_content(self, rel: str, source: Path) -> None:
        """Move a finished file to ``content/rel`` (atomically) and publish it."""
        dest = self.content / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, dest)
        self.published(rel)

    def remove_content(self, rel: str) -> None:
        """Remove ``content/rel`` here and from the bucket (a feed nothing publishes)."""
        (self.content / rel).unlink(missing_ok=True)
        if self.bucket is not None:
            self.bucket.delete(rel)

    def local(self, rel: str) -> Path:
        """``content/rel`` on this disk, fetched from the bucket if only it has it; a path
        that changes in place (``changes_in_place``) is fetched again every time, since
        another replica may have written it since.

        Raises:
            NotFound: neither has it.
        """
        path = self.content / rel
        if self.bucket is not None and changes_in_place(rel):
            if self.bucket.fetch(rel, path):
                return path
            path.unlink(missing_ok=True)
        elif path.exists() or (self.bucket is not None and self.bucket.fetch(rel, path)):
            return path
        raise NotFound(f"{rel} is not in the store")

    def read_content(self, rel: str) -> bytes | None:
        """The bytes of ``content/rel`` (through the bucket, as ``local``), or None."""
        try:
            return self.local(rel).read_bytes()
        except NotFound:
            return None

    def blob_stored(self, sha256: str) -> None:
        self.published(blob_rel(sha256))

    # -- blobs -----------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.content / blob_rel(sha256)

    def _blob(self, sha256: str) -> Path:
        """The blob's local file, fetched from the bucket if need be."""
        check_sha256(sha256)
        try:
            return self.local(blob_rel(sha256))
        except NotFound:
            raise NotFound(f"blob {sha256} is not in the store", sha256=sha256) from None

    def has(self, sha256: str) -> bool:
        if self.blob_path(sha256).exists():
            return True
        return self.bucket is not None and self.bucket.exists(blob_rel(sha256))

    def missing(self, hashes: Iterable[str]) -> list[str]:
        return sorted(h for h in set(hashes) if not self.has(h))

    def stored_size(self, sha256: str) -> int:
        return self._blob(sha256).stat().st_size

    def raw_size(self, sha256: str) -> int:
        """The uncompressed size of a blob, read from its frame header."""
        with open(self._blob(sha256), "rb") as f:
            header = f.read(18)
        try:
            size = zstandard.frame_content_size(header)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"blob {sha256} is corrupt ({e})", sha256, "unreadable") from e
        if size < 0:
            raise IntegrityError(f"blob {sha256} has no size in its header", sha256, "unknown")
        return size

    def open_blob(self, sha256: str) -> Iterator[bytes]:
        """Yield the decompressed bytes of a blob in chunks."""
        path = self._blob(sha256)
        with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as r:
            while chunk := r.read(CHUNK):
                yield chunk

    def verify_blob(self, sha256: str) -> None:
        """Raises IntegrityError if the stored blob does not decompress to its hash."""
        h = hashlib.sha256()
        try:
            for chunk in self.open_blob(sha256):
                h.update(chunk)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"blob {sha256} is corrupt ({e})", sha256, "unreadable") from e
        if h.hexdigest() != sha256:
            raise IntegrityError(f"blob {sha256}", sha256, h.hexdigest())

    def put_file(self, source: Path, sha256: str) -> None:
        """Store a local file as a blob (used by tests and by server-side imports)."""
        with open(source, "rb") as f:
            self._store_stream(f, sha256, os.fstat(f.fileno()).st_size)

    def _store_stream(self, raw: BinaryIO, sha256: str, size: int) -> None:
        target = self.blob_path(sha256)
        if target.exists():
            return
        writer = _BlobWriter(target, sha256, size)
        try:
            while chunk := raw.read(CHUNK):
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        writer.commit()
        self.blob_stored(sha256)

    def put_blobs(
        self, items: Sequence[tuple[str, bytes | memoryview]]
    ) -> list[IntegrityError | None]:
        """Store small files given whole, each checked against its hash on its own.

        Returns, per item, None (stored, or already there) or the IntegrityError that
        refused it; a refused item leaves nothing behind. Every stored blob is durable
        before it is visible, and its name durable before this returns; the fsyncs of all
        items run together.

        Raises:
            InvalidInput: an item's hash is not a SHA-256 hex string (nothing is stored).
        """
        for sha256, _ in items:
            check_sha256(sha256)
        results: list[IntegrityError | None] = []
        todo: dict[str, bytes | memoryview] = {}
        for sha256, data in items:
            got = hashlib.sha256(data).hexdigest()
            if got != sha256:
                results.append(IntegrityError("uploaded content", sha256, got))
                continue
            results.append(None)
            if not self.has(sha256):
                todo[sha256] = data
        if not todo:
            return results
        cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        temps: dict[str, Path] = {}
        try:
            for sha256, data in todo.items():
                fd, temps[sha256] = _temp_beside(self.blob_path(sha256))
                with os.fdopen(fd, "wb") as f:
                    f.write(cctx.compress(data))
            _fsync_all(temps.values())  # every blob durable before any becomes visible
            for sha256 in list(temps):
                os.replace(temps[sha256], self.blob_path(sha256))
                del temps[sha256]
        finally:
            for tmp in temps.values():
                tmp.unlink(missing_ok=True)
        _fsync_all({self.blob_path(h).parent for h in todo})  # the names, before we answer
        if self.bucket is not None:
            with ThreadPoolExecutor(BUCKET_THREADS) as pool:
                list(pool.map(self.blob_stored, todo))
        return results

    # -- resumable uploads -----------------------------------------------------------------

    def _part(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.uploads / f"{sha256}.part"

    def upload_offset(self, sha256: str) -> int:
        """How many bytes of this upload the store already holds (0 if none)."""
        try:
            return self._part(sha256).stat().st_size
        except FileNotFoundError:
            return 0

    def open_upload(self, sha256: str, offset: int, size: int, *, wait: bool = True) -> Upload:
        """Start a writer's turn at the upload of a file of ``size`` bytes, at ``offset``.

        If the store already has the blob, the returned Upload is already ``complete``.
        ``wait=False`` refuses at once, instead of waiting, when another writer holds the
        upload.

        Raises:
            Conflict: ``offset`` is not where the upload stands (another writer, or a
                client that lost track), or (``wait=False``) another writer holds it; the
                error's ``offset`` says where it stands.
        """
        part_path = self._part(sha256)
        while True:
            if self.has(sha256):
                return Upload(self, sha256, size)
            part = open(part_path, "ab")  # noqa: SIM115 -- held by the Upload until closed
            try:
                try:
                    # Two pushes of the same file may race; one appends, the other gets a
                    # Conflict.
                    if wait:
                        fcntl.flock(part.fileno(), fcntl.LOCK_EX)
                    else:
                        fcntl.flock(part.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise Conflict(
                        f"upload of {sha256} is in progress in another request",
                        sha256=sha256,
                        offset=self.upload_offset(sha256),
                    ) from None
                current = part.seek(0, os.SEEK_END)
                if current != offset:
                    raise Conflict(
                        f"upload of {sha256} stands at byte {current}, not {offset}",
                        sha256=sha256,
                        offset=current,
                    )
                if os.fstat(part.fileno()).st_nlink == 0:
                    part.close()  # finished or discarded while we waited: look again
                    continue
                if self.has(sha256):  # stored meanwhile by another path (a batch, put_file)
                    if current == 0:
                        part_path.unlink(missing_ok=True)
                    part.close()
                    return Upload(self, sha256, size)
                writer = _BlobWriter(self.blob_path(sha256), sha256, size) if offset == 0 else None
                return Upload(self, sha256, size, part, writer)
            except BaseException:
                part.close()
                raise

    def write_part(self, sha256: str, offset: int, chunks: Iterable[bytes], size: int) -> int:
        """Append bytes at ``offset`` to the upload of a file of ``size`` bytes.

        When the upload is complete, it is verified and becomes a blob.
        Returns the new offset.

        Raises:
            Conflict: ``offset`` is not where the upload stands (another writer, or a
                client that lost track); the message says where it stands.
            InvalidInput: more bytes than ``size``.
            IntegrityError: the complete upload does not match ``sha256``.
        """
        upload = self.open_upload(sha256, offset, size)
        if not upload.active:
            return size
        try:
            upload.write(chunks)
        except BaseException:
            upload.abort()
            raise
        return upload.close()

    # -- private files (inputs to publishing, never served directly) ------------------------

    def put_private(self, rel: str, data: bytes) -> None:
        path = self.root / "private" / rel
        atomic_write(path, data)
        if self.bucket is not None:
            self.bucket.put_file(Bucket.private(rel), path)

    def get_private(self, rel: str) -> bytes:
        path = self.root / "private" / rel
        if not path.exists() and self.bucket is not None:
            self.bucket.fetch(Bucket.private(rel), path)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{rel} is not in the store") from None

    # -- manifests -------------------------------------------------------------------------

    def put_manifest(self, manifest: Manifest) -> str:
        rel = f"manifests/{manifest.id}.json"
        if not (self.content / rel).exists():
            self.write_content(rel, manifest.canonical_bytes())
        return manifest.id

    def get_manifest(self, manifest_id: str) -> Manifest:
        check_sha256(manifest_id, "manifest id")
        try:
            raw = self.local(f"manifests/{manifest_id}.json").read_bytes()
        except NotFound:
            raise NotFound(f"manifest {manifest_id} is not in the store") from None
        got = hashlib.sha256(raw).hexdigest()
        if got != manifest_id:
            raise IntegrityError(f"manifest {manifest_id}", manifest_id, got)
        manifest = Manifest.from_json(raw)
        if manifest.id != manifest_id:
            raise IntegrityError(f"manifest {manifest_id}", manifest_id, manifest.id)
        return manifest
