"""The launcher's local object store: verified file contents by hash, shared by installs.

``objects/ab/abcdef…`` holds the decompressed content whose SHA-256 is ``abcdef…``, read-only;
``…x`` is the executable variant (a mode belongs to an inode, and install trees are hard
links to these). An object only appears, by rename, after the SHA-256 of its bytes was
computed and found equal to its name, so an object that exists is correct unless someone
wrote through a hard link — which ``verify`` finds and ``repair`` undoes. Several installs
(branches) under one cache share objects, so a wrong object would be every install's.

The SHA-256 is what is proven, whatever else is known: the signed delivery index also
lists a BLAKE3 digest per content (``blake3=``), and a second digest checked alone would
let a signer compromised once store bytes that match only it under the first's name, for
every install and for good (an object held is never fetched again). When a BLAKE3 is given
it is computed too, and one that disagrees with a matching SHA-256 (or that matches bytes
whose SHA-256 does not) is ``UntrustedMetadata`` naming the file: the signed metadata
contradicts itself, and nothing is stored.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import queue
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import blake3 as blake3_lib
import zstandard

from changeover.content.chunks import READ_BLOCK, check_blake3, hash_range
from changeover.content.manifest import check_sha256
from changeover.content.patch_index import EMPTY_SHA256
from changeover.errors import IntegrityError, UntrustedMetadata

CHUNK = 1 << 20
WRITEBACK_BYTES = 8 << 20
"""An object being written asks the kernel to start writing its pages to disk every this
many bytes (``start_writeback``), so that the fsync that makes it durable before it is
renamed into place waits for the last few megabytes, not for all of them."""
HASH_THREAD_BYTES = 1 << 20
"""An object given in one piece of at least this many bytes is hashed on a thread while
it is written (smaller ones: starting the thread costs more than it saves)."""
QUEUE_DEPTH = 8
"""Pieces (of up to ``CHUNK`` bytes, as a patch decodes them) an ObjectWriter buffers."""
BATCH_BYTES = 256 << 20
BATCH_SECONDS = 0.25
"""An :meth:`ObjectStore.batch` commits its objects in groups of at most these."""


class ObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.partial = root / "partial"
        self.partial.mkdir(parents=True, exist_ok=True)
        self._pending: _Batch | None = None
        self._pending_lock = threading.Lock()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Objects :meth:`writer` finishes inside the block are made durable in groups: one
        ``syncfs`` of the store's file system (Linux; elsewhere a fsync of each), then each
        is renamed into place. An update writes hundreds of objects, and a fsync of each,
        each a journal commit, cost more than writing them. A group is committed once it
        holds ``BATCH_BYTES`` or is ``BATCH_SECONDS`` old, and when the block ends,
        cleanly or not, so a kill loses at most that much verified work. Until then an
        object is not visible (nothing written in a batch is a base or a source for the
        rest of it). Not reentrant."""
        with self._pending_lock:
            if self._pending is not None:
                raise RuntimeError("ObjectStore.batch is not reentrant")
            self._pending = _Batch(time.monotonic())
        try:
            yield
        finally:
            with self._pending_lock:
                batch, self._pending = self._pending, None
            _commit(self.root, batch.items)

    def _defer(self, item: _Pending) -> bool:
        """Add a finished object to the open batch; False if there is none. Commits the
        group it completes (outside the lock: other writers go on meanwhile)."""
        with self._pending_lock:
            batch = self._pending
            if batch is None:
                return False
            batch.items.append(item)
            batch.bytes += item.size
            now = time.monotonic()
            if batch.bytes < BATCH_BYTES and now - batch.started < BATCH_SECONDS:
                return True
            due, self._pending = batch.items, _Batch(now)
        _commit(self.root, due)
        return True

    def path(self, sha256: str, executable: bool) -> Path:
        check_sha256(sha256)
        return self.root / sha256[:2] / (sha256 + ("x" if executable else ""))

    def find(self, sha256: str) -> Path | None:
        """Either variant of an object, if held; the empty content always is (the base of
        a fresh patch: ``content.patch_index.EMPTY_SHA256``)."""
        if sha256 == EMPTY_SHA256:
            return self._empty()
        for executable in (False, True):
            p = self.path(sha256, executable)
            if p.exists():
                return p
        return None

    def _empty(self) -> Path:
        p = self.path(EMPTY_SHA256, False)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-")
            os.close(fd)
            os.chmod(tmp, 0o444)
            os.replace(tmp, p)  # the same empty object whoever makes it first
        return p

    def held(self) -> list[tuple[str, int]]:
        """(sha256, size) of every content held, in either variant."""
        out: dict[str, int] = {}
        for sub in self.root.iterdir():
            if sub == self.partial or not sub.is_dir():
                continue
            for obj in sub.iterdir():
                if obj.name.startswith(".tmp-"):
                    continue
                try:
                    out[obj.name.rstrip("x")] = obj.stat().st_size
                except FileNotFoundError:
                    continue  # collected meanwhile by another launcher (``locks.CacheUsers``)
        return sorted(out.items())

    def has(self, sha256: str, executable: bool) -> bool:
        return self.path(sha256, executable).exists()

    def part_path(self, name: str) -> Path:
        return self.partial / name

    def add_from_zstd(
        self,
        part: Path,
        sha256: str,
        size: int,
        executable: bool,
        *,
        blake3: str | None = None,
        name: str | None = None,
    ) -> None:
        """Decompress a downloaded blob into the store, checking its size and SHA-256 (and
        ``blake3``, if given, against them). ``name`` (a path of the build) names the file
        in errors.

        Raises:
            IntegrityError: the content is not what ``sha256`` and ``size`` promise; the
                partial download is deleted so the next attempt starts afresh.
            UntrustedMetadata: the two signed digests disagree about these bytes.
        """
        if self.has(sha256, executable):
            part.unlink(missing_ok=True)
            return
        label = describe(sha256, name)
        try:
            with (
                open(part, "rb") as src,
                zstandard.ZstdDecompressor().stream_reader(src) as reader,
                self.writer(sha256, size, executable, blake3=blake3, name=name) as out,
            ):
                while chunk := reader.read(CHUNK):
                    out.write(chunk)
        except zstandard.ZstdError as e:
            part.unlink(missing_ok=True)
            raise IntegrityError(
                f"the download of {label} is not valid zstd ({e})", sha256, "not zstd"
            ) from e
        except IntegrityError:
            part.unlink(missing_ok=True)
            raise
        part.unlink(missing_ok=True)

    def add_from_file(
        self,
        source: Path,
        sha256: str,
        size: int,
        executable: bool,
        *,
        blake3: str | None = None,
        name: str | None = None,
    ) -> None:
        """Copy a local file (e.g. a held variant) into the store after checking it."""
        if self.has(sha256, executable):
            return
        with (
            open(source, "rb") as src,
            self.writer(sha256, size, executable, blake3=blake3, name=name) as out,
        ):
            while chunk := src.read(CHUNK):
                out.write(chunk)

    @contextlib.contextmanager
    def writer(
        self,
        sha256: str,
        size: int,
        executable: bool,
        *,
        blake3: str | None = None,
        name: str | None = None,
    ) -> Iterator[ObjectWriter]:
        """Write an object's bytes in order (e.g. as a patch decodes them) straight into
        the store: they are hashed as they are written, and on a clean exit from the block
        the file is fsynced and renamed into place (in a :meth:`batch`, at its end) if,
        and only if, its size and SHA-256 match (and its BLAKE3 too, if ``blake3`` is
        given). One pass over the bytes, no copy; a mismatch or an error inside the block
        leaves nothing behind.

        Raises:
            IntegrityError: more than ``size`` bytes written, or other content.
            UntrustedMetadata: the bytes match one of the two signed digests only.
        """
        target = self.path(sha256, executable)
        if blake3 is not None:
            check_blake3(blake3)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            synced = False
            with os.fdopen(fd, "wb") as out:
                sink = ObjectWriter(out, sha256, size, blake3, name=name)
                try:
                    yield sink
                finally:
                    sink.close()
                sink.check()
                out.flush()
                if self._pending is None:
                    os.fsync(out.fileno())
                    synced = True
            # Closed first: Windows renames no open file.
            if not synced and self._defer(_Pending(Path(tmp), target, executable, size)):
                return
            if not synced:  # the batch ended meanwhile
                _fsync_path(Path(tmp))
            os.chmod(tmp, 0o555 if executable else 0o444)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def add_variant(
        self, sha256: str, executable: bool, *, blake3: str | None = None, name: str | None = None
    ) -> None:
        """Make the other mode variant of an object we already hold."""
        held = self.find(sha256)
        if held is None or self.has(sha256, executable):
            return
        size = held.stat().st_size
        self.add_from_file(held, sha256, size, executable, blake3=blake3, name=name)

    def remove_damaged(self, sha256: str, size: int) -> list[Path]:
        """Delete each variant of a content whose bytes are no longer it (written through
        a hard link); returns those deleted. An intact object is kept: it is not fetched
        again."""
        removed = []
        for executable in (False, True):
            p = self.path(sha256, executable)
            try:
                intact = p.stat().st_size == size and _sha256_of(p, size) == sha256
            except FileNotFoundError:
                continue
            except OSError:
                intact = False
            if not intact:
                unlink_read_only(p)
                removed.append(p)
            else:  # a chmod through the link reached it too: read-only again
                os.chmod(p, 0o555 if executable else 0o444)
        return removed

    def remove(self, sha256: str) -> None:
        for executable in (False, True):
            unlink_read_only(self.path(sha256, executable))

    def collect_garbage(self, keep: Iterable[str]) -> int:
        """Delete objects no install references, and unfinished ``.tmp-`` files; returns
        how many objects were deleted. Only while no one else uses the store: the caller
        holds ``locks.CacheUsers.alone``."""
        wanted = set(keep)
        removed = 0
        for sub in self.root.iterdir():
            if sub == self.partial or not sub.is_dir():
                continue
            for obj in sub.iterdir():
                if obj.name.startswith(".tmp-"):
                    unlink_read_only(obj)
                    continue
                if obj.name.rstrip("x") not in wanted:
                    unlink_read_only(obj)
                    removed += 1
        return removed


class ObjectWriter:
    """The file object :meth:`ObjectStore.writer` yields: hashes and writes what it is
    given on a thread of its own, so that producing the bytes (a patch decoding) overlaps
    hashing and writing them (all three release the GIL). A bounded queue keeps at most
    ``QUEUE_DEPTH`` pieces in flight; an error on the thread is raised by the next call.

    The thread starts with the second piece: an object given in one piece (a file made
    whole in memory, a small blob) has nothing to overlap, and hundreds of them (a build's
    recompiled libraries) spent more starting threads than hashing."""

    def __init__(
        self,
        out: BinaryIO,
        sha256: str,
        size: int,
        blake3: str | None = None,
        *,
        name: str | None = None,
    ) -> None:
        self._out = out
        self._sha256 = hashlib.sha256()
        self._blake3 = blake3_lib.blake3() if blake3 is not None else None
        self.blake3 = blake3
        self.sha256 = sha256
        self.label = describe(sha256, name)
        self.size = size
        self.written = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_DEPTH)
        self._error: OSError | None = None
        self._first: bytes | None = None
        """The first piece, held until a second one starts the thread, or ``close``."""
        self._thread: threading.Thread | None = None
        self._done = 0

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._take(data)

    def _take(self, data: bytes, *, sha256: bool = True) -> None:
        if self._error is not None:
            return  # drain, so the producer never blocks on a dead consumer
        try:
            if sha256:
                self._sha256.update(data)
            if self._blake3 is not None:
                self._blake3.update(data)
            self._out.write(data)
            self._done += len(data)
            if self._done % WRITEBACK_BYTES < len(data):
                self._out.flush()
                start_writeback(self._out.fileno())
        except OSError as e:  # a full disk, an I/O error: raised in the producer
            self._error = e

    def _take_whole(self, data: bytes) -> None:
        """The only piece, here: a big one (a patch result made whole in memory) is
        SHA-256 hashed on a thread while this one writes it, which takes about as long."""
        if len(data) < HASH_THREAD_BYTES:
            self._take(data)
            return
        hashing = threading.Thread(target=self._sha256.update, args=(data,), name="object-hash")
        hashing.start()
        try:
            self._take(data, sha256=False)
        finally:
            hashing.join()

    def write(self, data: bytes, /) -> int:
        if self._error is not None:
            raise self._error
        self.written += len(data)
        if self.written > self.size:
            raise IntegrityError(
                f"{self.label} is longer than {self.size} bytes", self.sha256, "too long"
            )
        if self._thread is None:
            if self._first is None:
                self._first = bytes(data)
                return len(data)
            self._thread = threading.Thread(target=self._run, name="object-writer", daemon=True)
            self._thread.start()
            self._queue.put(self._first)
            self._first = None
        self._queue.put(bytes(data))
        return len(data)

    def close(self) -> None:
        """Wait for every queued piece to be hashed and written (idempotent)."""
        if self._first is not None:
            first, self._first = self._first, None
            self._take_whole(first)
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def check(self) -> None:
        """Raises unless the bytes written are the content named: its size, its SHA-256,
        and the BLAKE3 given beside it (see the module docstring)."""
        self.close()
        if self._error is not None:
            raise self._error
        got = self._sha256.hexdigest()
        b3_ok = self._blake3 is None or self._blake3.hexdigest() == self.blake3
        if self.written != self.size:
            raise IntegrityError(
                f"{self.label} has {self.written} bytes, not {self.size}", self.sha256, got
            )
        if got != self.sha256 and self._blake3 is not None and b3_ok:
            raise UntrustedMetadata(
                f"{self.label}: the bytes served match the BLAKE3 digest in the signed"
                f" delivery index but not the SHA-256 that names the file (they hash to"
                f" {got}); the signed metadata contradicts itself, so nothing was stored"
            )
        if got != self.sha256:
            raise IntegrityError(self.label, self.sha256, got)
        if not b3_ok:
            raise UntrustedMetadata(
                f"{self.label}: the signed delivery index gives it a BLAKE3 digest"
                f" ({self.blake3}) that is not its content's, whose SHA-256 matches; the"
                " signed metadata contradicts itself, so nothing was stored"
            )


@dataclass(frozen=True)
class _Pending:
    """An object of a batch: checked, written to ``tmp``, not durable nor in place yet."""

    tmp: Path
    target: Path
    executable: bool
    size: int


@dataclass
class _Batch:
    started: float
    items: list[_Pending] = field(default_factory=list)
    bytes: int = 0


def _commit(root: Path, pending: list[_Pending]) -> None:
    """Make a batch's objects durable, then put each in place (:meth:`ObjectStore.batch`).
    An error leaves the rest unrenamed, as temporary files garbage collection deletes."""
    if not pending:
        return
    if not _syncfs(root):
        for p in pending:
            _fsync_path(p.tmp)
    for p in pending:
        os.chmod(p.tmp, 0o555 if p.executable else 0o444)
        os.replace(p.tmp, p.target)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))  # Windows fsyncs writable ones
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs(path: Path) -> bool:
    """Linux's ``syncfs`` of the file system holding ``path``: every dirty page of it
    written and the journal committed once. False where there is none or it failed."""
    fn = _libc_function("syncfs")
    if fn is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return fn(fd) == 0
    finally:
        os.close(fd)


def unlink_read_only(path: Path) -> None:
    """Delete ``path`` (if it exists), read-only or not. POSIX deletes a read-only file;
    Windows refuses to (PermissionError) until its read-only attribute is cleared."""
    try:
        path.unlink(missing_ok=True)
    except PermissionError:
        if os.name != "nt":
            raise
        os.chmod(path, stat.S_IWRITE | stat.S_IREAD)
        path.unlink(missing_ok=True)


def _sha256_of(path: Path, size: int) -> str:
    return hash_range(path, 0, size, bytearray(READ_BLOCK))


def describe(sha256: str, name: str | None) -> str:
    """How an error names a content: the file of the build, and its hash to tell apart
    two versions of one file."""
    return f"{name} (sha256 {sha256[:12]}…)" if name else f"content {sha256}"


@functools.cache
def _libc_function(name: str) -> Callable[..., int] | None:
    """A function of Linux's C library (``sync_file_range``, ``syncfs``), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    if name == "sync_file_range":
        fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    else:
        fn.argtypes = (ctypes.c_int,)
    fn.restype = ctypes.c_int
    return cast(Callable[..., int], fn)


_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages to disk, without waiting.

    Linux's ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, as dpkg uses it: durability still
    comes from the fsync before the rename; this only lets the disk work while we decode,
    where it would otherwise start when fsync is called (measured, a 127 MB object: the
    fsync alone took 0.3 s, as long as decoding the patch). Elsewhere, or if the call
    fails, nothing happens.
    """
    fn = _libc_function("sync_file_range")
    if fn is not None:
        fn(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # 0, 0: the whole file; an error only costs time
