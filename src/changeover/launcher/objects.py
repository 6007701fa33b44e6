"""The launcher's local object store: verified file contents by hash, shared by installs.

``objects/ab/abcdef…`` holds the decompressed content whose SHA-256 is ``abcdef…``, read-only;
``…x`` is the executable variant (a mode belongs to an inode, and install trees are hard
links to these). An object only appears, by rename, after its hash was checked, so an
object that exists is correct unless someone wrote through a hard link — which ``verify``
finds and ``repair`` undoes. Several installs (branches) under one cache share objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import zstandard

from changeover.content.manifest import check_sha256
from changeover.errors import IntegrityError

CHUNK = 1 << 20


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

    def add_from_zstd(self, part: Path, sha256: str, size: int, executable: bool) -> None:
        """Decompress a downloaded blob into the store, checking size and hash.

        Raises:
            IntegrityError: the content is not what ``sha256`` and ``size`` promise; the
                partial download is deleted so the next attempt starts afresh.
        """
        try:
            with open(part, "rb") as src:
                reader = zstandard.ZstdDecompressor().stream_reader(src)
                self._write(reader.read, sha256, size, executable)
        except (zstandard.ZstdError, IntegrityError) as e:
            part.unlink(missing_ok=True)
            if isinstance(e, IntegrityError):
                raise
            raise IntegrityError(f"blob {sha256} is not valid zstd ({e})", sha256, "?") from e
        part.unlink(missing_ok=True)

    def add_from_file(self, source: Path, sha256: str, size: int, executable: bool) -> None:
        """Copy a local file (e.g. a patched result) into the store after checking it."""
        with open(source, "rb") as src:
            self._write(src.read, sha256, size, executable)

    def add_variant(self, sha256: str, executable: bool) -> None:
        """Make the other mode variant of an object we already hold."""
        held = self.find(sha256)
        if held is None or self.has(sha256, executable):
            return
        size = held.stat().st_size
        self.add_from_file(held, sha256, size, executable)

    def _write(
        self, read: Callable[[int], bytes], sha256: str, size: int, executable: bool
    ) -> None:
        target = self.path(sha256, executable)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        h = hashlib.sha256()
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
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != sha256 or written != size:
                raise IntegrityError(f"object {sha256}", sha256, h.hexdigest())
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
