"""The launcher's local object store: verified file contents by hash, shared by installs.

``objects/ab/abcdef…`` holds the decompressed content whose SHA-256 is ``abcdef…``, read-only;
``…x`` is the executable variant (a mode belongs to an inode, and install trees are hard
links to these). An object only appears, by rename, after its hash was checked, so an
object that exists is correct unless someone wrote through a hard link — which ``verify``
finds and ``repair`` undoes. Several installs (branches) under one cache share objects.

The check is the content's BLAKE3 when the signed delivery index lists it (callers pass
``blake3=``), else its SHA-256: the two are equally binding (``content.chunks``), and
BLAKE3 runs several times faster, which is most of an update's time for a big file.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import queue
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, cast

import blake3 as blake3_lib
import zstandard

from changeover.content.chunks import check_blake3
from changeover.content.manifest import check_sha256
from changeover.errors import IntegrityError

CHUNK = 1 << 20
WRITEBACK_BYTES = 8 << 20
"""An object being written asks the kernel to start writing its pages to disk every this
many bytes (``start_writeback``), so that the fsync that makes it durable before it is
renamed into place waits for the last few megabytes, not for all of them."""
QUEUE_DEPTH = 8
"""Pieces (of up to ``CHUNK`` bytes, as a patch decodes them) an ObjectWriter buffers."""


class ObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.partial = root / "partial"
        self.partial.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str, executable: bool) -> Path:
        check_sha256(sha256)
        return self.root / sha256[:2] / (sha256 + ("x" if executable else ""))

    def find(self, sha256: str) -> Path | None:
        """Either variant of an object, if held."""
        for executable in (False, True):
            p = self.path(sha256, executable)
            if p.exists():
                return p
        return None

    def held(self) -> list[tuple[str, int]]:
        """(sha256, size) of every content held, in either variant."""
        out: dict[str, int] = {}
        for sub in self.root.iterdir():
            if sub == self.partial or not sub.is_dir():
                continue
            for obj in sub.iterdir():
                if not obj.name.startswith(".tmp-"):
                    out[obj.name.rstrip("x")] = obj.stat().st_size
        return sorted(out.items())

    def has(self, sha256: str, executable: bool) -> bool:
        return self.path(sha256, executable).exists()

    def part_path(self, name: str) -> Path:
        return self.partial / name

    def add_from_zstd(
        self, part: Path, sha256: str, size: int, executable: bool, *, blake3: str | None = None
    ) -> None:
        """Decompress a downloaded blob into the store, checking size and hash.

        Raises:
            IntegrityError: the content is not what ``sha256`` and ``size`` promise; the
                partial download is deleted so the next attempt starts afresh.
        """
        try:
            with open(part, "rb") as src:
                reader = zstandard.ZstdDecompressor().stream_reader(src)
                self._write(reader.read, sha256, size, executable, blake3)
        except (zstandard.ZstdError, IntegrityError) as e:
            part.unlink(missing_ok=True)
            if isinstance(e, IntegrityError):
                raise
            raise IntegrityError(f"blob {sha256} is not valid zstd ({e})", sha256, "?") from e
        part.unlink(missing_ok=True)

    def add_from_file(
        self, source: Path, sha256: str, size: int, executable: bool, *, blake3: str | None = None
    ) -> None:
        """Copy a local file (e.g. a patched result) into the store after checking it."""
        with open(source, "rb") as src:
            self._write(src.read, sha256, size, executable, blake3)

    @contextlib.contextmanager
    def writer(
        self, sha256: str, size: int, executable: bool, *, blake3: str | None = None
    ) -> Iterator[ObjectWriter]:
        """Write an object's bytes in order (e.g. as a patch decodes them) straight into
        the store: they are hashed as they are written, and on a clean exit from the block
        the file is fsynced and renamed into place if, and only if, its size and SHA-256
        match (its BLAKE3, if ``blake3`` is given). One pass over the bytes, no copy; a
        mismatch or an error inside the block leaves nothing behind.

        Raises:
            IntegrityError: more than ``size`` bytes written, or other content.
        """
        target = self.path(sha256, executable)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                sink = ObjectWriter(out, sha256, size, blake3)
                try:
                    yield sink
                finally:
                    sink.close()
                sink.check()
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o555 if executable else 0o444)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def add_variant(self, sha256: str, executable: bool, *, blake3: str | None = None) -> None:
        """Make the other mode variant of an object we already hold."""
        held = self.find(sha256)
        if held is None or self.has(sha256, executable):
            return
        size = held.stat().st_size
        self.add_from_file(held, sha256, size, executable, blake3=blake3)

    def _write(
        self,
        read: Callable[[int], bytes],
        sha256: str,
        size: int,
        executable: bool,
        blake3: str | None,
    ) -> None:
        target = self.path(sha256, executable)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        h, expected = _hasher(sha256, blake3)
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := read(CHUNK):
                    written += len(chunk)
                    if written > size:
                        raise IntegrityError(
                            f"object {sha256} is longer than {size} bytes", sha256, "too long"
                        )
                    h.update(chunk)
                    out.write(chunk)
                    if written % WRITEBACK_BYTES < len(chunk):
                        out.flush()
                        start_writeback(out.fileno())
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != expected or written != size:
                raise IntegrityError(f"object {sha256}", expected, h.hexdigest())
            os.chmod(tmp, 0o555 if executable else 0o444)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def remove(self, sha256: str) -> None:
        for executable in (False, True):
            self.path(sha256, executable).unlink(missing_ok=True)

    def collect_garbage(self, keep: Iterable[str]) -> int:
        """Delete objects no install references; returns how many were deleted."""
        wanted = set(keep)
        removed = 0
        for sub in self.root.iterdir():
            if sub == self.partial or not sub.is_dir():
                continue
            for obj in sub.iterdir():
                if obj.name.startswith(".tmp-"):
                    obj.unlink(missing_ok=True)
                    continue
                if obj.name.rstrip("x") not in wanted:
                    obj.unlink(missing_ok=True)
                    removed += 1
        return removed


class ObjectWriter:
    """The file object :meth:`ObjectStore.writer` yields: hashes and writes what it is
    given on a thread of its own, so that producing the bytes (a patch decoding) overlaps
    hashing and writing them (all three release the GIL). A bounded queue keeps at most
    ``QUEUE_DEPTH`` pieces in flight; an error on the thread is raised by the next call."""

    def __init__(self, out: BinaryIO, sha256: str, size: int, blake3: str | None = None) -> None:
        self._out = out
        self._hash, self._expected = _hasher(sha256, blake3)
        self.sha256 = sha256
        self.size = size
        self.written = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_DEPTH)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="object-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        done = 0
        while (data := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain, so the producer never blocks on a dead consumer
            try:
                self._hash.update(data)
                self._out.write(data)
                done += len(data)
                if done % WRITEBACK_BYTES < len(data):
                    self._out.flush()
                    start_writeback(self._out.fileno())
            except OSError as e:  # a full disk, an I/O error: raised in the producer
                self._error = e

    def write(self, data: bytes, /) -> int:
        if self._error is not None:
            raise self._error
        self.written += len(data)
        if self.written > self.size:
            raise IntegrityError(
                f"object {self.sha256} is longer than {self.size} bytes", self.sha256, "too long"
            )
        self._queue.put(bytes(data))
        return len(data)

    def close(self) -> None:
        """Wait for every queued piece to be hashed and written (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def check(self) -> None:
        self.close()
        if self._error is not None:
            raise self._error
        got = self._hash.hexdigest()
        if got != self._expected or self.written != self.size:
            raise IntegrityError(f"object {self.sha256}", self._expected, got)


class _Hash(Protocol):
    def update(self, data: bytes, /) -> object: ...
    def hexdigest(self) -> str: ...


def _hasher(sha256: str, blake3: str | None) -> tuple[_Hash, str]:
    """The hash that checks a content, and the digest it must give."""
    if blake3 is None:
        return hashlib.sha256(), sha256
    return blake3_lib.blake3(), check_blake3(blake3)


@functools.cache
def _sync_file_range() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
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
    fn = _sync_file_range()
    if fn is not None:
        fn(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # 0, 0: the whole file; an error only costs time
