"""The content tree on a local disk: hash-named, zstd-compressed blobs and manifests.

Layout (everything under ``content/`` is immutable and servable by any static server)::

    content/blobs/ab/abcdef…      zstd frame of the file whose SHA-256 is abcdef…
    content/manifests/<id>.json   a manifest, named by its own hash
    uploads/<sha256>.part         raw bytes of an upload in progress (resumable)

Every object appears by an atomic rename after its hash was checked, so a process killed
at any instant leaves either no object or a complete, verified one; a torn ``.part`` file
is simply resumed or overwritten by the next upload.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from changeover.content.manifest import Manifest, check_sha256
from changeover.errors import Conflict, IntegrityError, InvalidInput, NotFound

CHUNK = 1 << 20
ZSTD_LEVEL = 3
PUBLIC_MODE = 0o644  # readable by whatever static server or sync tool serves the tree


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, PUBLIC_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class LocalStore:
    """Blobs and manifests in a directory; see the module docstring for the layout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.content = root / "content"
        self.uploads = root / "uploads"
        for d in (self.content / "blobs", self.content / "manifests", self.uploads):
            d.mkdir(parents=True, exist_ok=True)

    # -- blobs -----------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.content / "blobs" / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.blob_path(sha256).exists()

    def missing(self, hashes: Iterable[str]) -> list[str]:
        return sorted(h for h in set(hashes) if not self.has(h))

    def stored_size(self, sha256: str) -> int:
        try:
            return self.blob_path(sha256).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} is not in the store", sha256=sha256) from None

    def raw_size(self, sha256: str) -> int:
        """The uncompressed size of a blob, read from its frame header."""
        path = self.blob_path(sha256)
        try:
            with open(path, "rb") as f:
                header = f.read(18)
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} is not in the store", sha256=sha256) from None
        try:
            size = zstandard.frame_content_size(header)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"blob {sha256} is corrupt ({e})", sha256, "unreadable") from e
        if size < 0:
            raise IntegrityError(f"blob {sha256} has no size in its header", sha256, "unknown")
        return size

    def open_blob(self, sha256: str) -> Iterator[bytes]:
        """Yield the decompressed bytes of a blob in chunks."""
        path = self.blob_path(sha256)
        if not path.exists():
            raise NotFound(f"blob {sha256} is not in the store", sha256=sha256)
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
            self._store_compressed(f, sha256)

    def _store_compressed(self, raw: BinaryIO, sha256: str) -> None:
        target = self.blob_path(sha256)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        h = hashlib.sha256()
        try:
            os.fchmod(fd, PUBLIC_MODE)
            with os.fdopen(fd, "wb") as out:
                cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
                # The raw size goes into the frame header, so raw_size() can check a
                # manifest's claimed size without decompressing anything.
                size = os.fstat(raw.fileno()).st_size
                with cctx.stream_writer(out, size=size, closefd=False) as w:
                    while chunk := raw.read(CHUNK):
                        h.update(chunk)
                        w.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != sha256:
                raise IntegrityError("uploaded content", sha256, h.hexdigest())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

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
        if self.has(sha256):
            return size
        part = self._part(sha256)
        with open(part, "ab") as f:
            # Two pushes of the same file may race; one appends, the other gets a Conflict.
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            current = f.seek(0, os.SEEK_END)
            if current != offset:
                raise Conflict(
                    f"upload of {sha256} stands at byte {current}, not {offset}",
                    sha256=sha256,
                    offset=current,
                )
            written = current
            for chunk in chunks:
                written += len(chunk)
                if written > size:
                    f.truncate(current)
                    raise InvalidInput(
                        f"upload of {sha256} sent more than its declared {size} bytes",
                        sha256=sha256,
                    )
                f.write(chunk)
            f.flush()
        if written == size:
            self._finish(sha256)
        return written

    def _finish(self, sha256: str) -> None:
        part = self._part(sha256)
        try:
            with open(part, "rb") as f:
                self._store_compressed(f, sha256)
        except FileNotFoundError:
            # A concurrent writer of the same upload finished (or discarded) it first.
            if self.has(sha256):
                return
            raise Conflict(
                f"upload of {sha256} was restarted by another writer",
                sha256=sha256,
                offset=self.upload_offset(sha256),
            ) from None
        except IntegrityError:
            part.unlink(missing_ok=True)
            raise
        part.unlink(missing_ok=True)

    # -- private files (inputs to publishing, never served directly) ------------------------

    def put_private(self, rel: str, data: bytes) -> None:
        atomic_write(self.root / "private" / rel, data)

    def get_private(self, rel: str) -> bytes:
        try:
            return (self.root / "private" / rel).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{rel} is not in the store") from None

    # -- manifests -------------------------------------------------------------------------

    def put_manifest(self, manifest: Manifest) -> str:
        path = self.content / "manifests" / f"{manifest.id}.json"
        if not path.exists():
            atomic_write(path, manifest.canonical_bytes())
        return manifest.id

    def get_manifest(self, manifest_id: str) -> Manifest:
        check_sha256(manifest_id, "manifest id")
        path = self.content / "manifests" / f"{manifest_id}.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"manifest {manifest_id} is not in the store") from None
        got = hashlib.sha256(raw).hexdigest()
        if got != manifest_id:
            raise IntegrityError(f"manifest {manifest_id}", manifest_id, got)
        manifest = Manifest.from_json(raw)
        if manifest.id != manifest_id:
            raise IntegrityError(f"manifest {manifest_id}", manifest_id, manifest.id)
        return manifest
