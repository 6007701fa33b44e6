"""Per-chunk SHA-256 of big files, so that checking one file can use every core.

A file's SHA-256 is one sequential pass: however many cores a host has, hashing a single
large file runs on one of them. So the publisher also records, for every content of at
least ``CHUNKED_FROM`` bytes, the SHA-256 of each ``chunk_bytes`` piece of it (the last one
shorter), in the signed delivery index (:mod:`changeover.content.delivery`). A file whose
size matches and whose every chunk hashes to its recorded digest is that content, as surely
as if its whole-file hash had been checked (SHA-256 is as collision-resistant per chunk as
whole), and the chunks hash in parallel threads: ``hashlib`` releases the GIL while it
hashes a large buffer, and so does reading a file.

The whole-file SHA-256 stays the identity of a content everywhere (manifests, the store,
patches); chunk hashes are only a faster way to check a file already on disk. Where none
were published (small files, indexes made before them), checking falls back to the whole
file's hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from changeover.content.manifest import check_sha256
from changeover.errors import IntegrityError, InvalidInput

CHUNK_BYTES = 8 << 20
"""Default chunk size: small enough that a 100 MB file spreads over a dozen threads, big
enough that a 10 GB install lists under 1,300 digests (about 85 KB of JSON)."""
CHUNKED_FROM = 2 * CHUNK_BYTES
"""Contents at least this big get chunk hashes; smaller ones are checked whole (a host has
many of them to spread over its cores anyway)."""
MIN_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 1 << 30
READ_BLOCK = 1 << 20


def chunk_count(size: int, chunk_bytes: int) -> int:
    return max(1, -(-size // chunk_bytes))


@dataclass(frozen=True)
class ChunkHashes:
    """Content SHA-256 → the SHA-256 of each ``chunk_bytes`` piece of that content."""

    chunk_bytes: int = CHUNK_BYTES
    hashes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (
            not isinstance(self.chunk_bytes, int)
            or isinstance(self.chunk_bytes, bool)
            or not MIN_CHUNK_BYTES <= self.chunk_bytes <= MAX_CHUNK_BYTES
        ):
            raise InvalidInput(
                f"chunk_bytes must be an integer in [{MIN_CHUNK_BYTES}, {MAX_CHUNK_BYTES}]"
            )

    def __bool__(self) -> bool:
        return bool(self.hashes)

    def for_content(self, sha256: str, size: int) -> tuple[str, ...] | None:
        """The chunk digests of a content of ``size`` bytes, if known and consistent."""
        found = self.hashes.get(sha256)
        if found is None or len(found) != chunk_count(size, self.chunk_bytes):
            return None
        return found

    def restricted(self, contents: Iterable[str]) -> ChunkHashes:
        """Only the entries of ``contents`` (what one manifest needs)."""
        return ChunkHashes(
            self.chunk_bytes, {h: self.hashes[h] for h in sorted(set(contents)) if h in self.hashes}
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_bytes": self.chunk_bytes,
            "chunks": {h: list(v) for h, v in sorted(self.hashes.items())},
        }

    @classmethod
    def from_dict(cls, d: Any) -> ChunkHashes:
        """Raises InvalidInput on anything malformed."""
        if not isinstance(d, Mapping):
            raise InvalidInput("chunk hashes must be an object")
        raw = d.get("chunks")
        if not isinstance(raw, Mapping):
            raise InvalidInput("chunk hashes need a 'chunks' object")
        hashes: dict[str, tuple[str, ...]] = {}
        for content, digests in raw.items():
            check_sha256(content, "chunked content")
            if not isinstance(digests, list) or not digests:
                raise InvalidInput(f"chunk hashes of {content} must be a non-empty list")
            hashes[content] = tuple(check_sha256(x, "chunk sha256") for x in digests)
        chunk_bytes = d.get("chunk_bytes")
        if not isinstance(chunk_bytes, int):
            raise InvalidInput("chunk hashes need an integer 'chunk_bytes'")
        return cls(chunk_bytes, hashes)


class ChunkHasher:
    """Feed a content's bytes in order; get its SHA-256 and the SHA-256 of each chunk."""

    def __init__(self, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.chunk_bytes = chunk_bytes
        self.whole = hashlib.sha256()
        self.chunks: list[str] = []
        self._chunk = hashlib.sha256()
        self._filled = 0
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self.whole.update(view)
        self.size += len(view)
        while view:
            take = min(len(view), self.chunk_bytes - self._filled)
            self._chunk.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.chunk_bytes:
                self.chunks.append(self._chunk.hexdigest())
                self._chunk = hashlib.sha256()
                self._filled = 0

    def finish(self) -> tuple[str, tuple[str, ...]]:
        """(whole-file SHA-256, chunk SHA-256s). An empty content has one empty chunk."""
        if self._filled or not self.chunks:
            self.chunks.append(self._chunk.hexdigest())
            self._filled = 0
        return self.whole.hexdigest(), tuple(self.chunks)


def hash_chunks(
    chunks: Iterable[bytes], sha256: str, chunk_bytes: int = CHUNK_BYTES
) -> tuple[str, ...]:
    """The chunk digests of the bytes ``chunks`` yields, which must hash to ``sha256``.

    Raises:
        IntegrityError: they do not (the chunk digests would describe other content).
    """
    hasher = ChunkHasher(chunk_bytes)
    for piece in chunks:
        hasher.update(piece)
    whole, digests = hasher.finish()
    if whole != sha256:
        raise IntegrityError(f"content {sha256}", sha256, whole)
    return digests


def hash_range(path: Path, start: int, length: int, buf: bytearray | None = None) -> str:
    """SHA-256 of ``length`` bytes of ``path`` from ``start`` (fewer if the file is shorter:
    the digest then simply differs)."""
    h = hashlib.sha256()
    block = buf if buf is not None else bytearray(READ_BLOCK)
    view = memoryview(block)
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        remaining = length
        while remaining > 0:
            n = f.readinto(view[: min(len(view), remaining)])
            if not n:
                break
            h.update(view[:n])
            remaining -= n
    return h.hexdigest()
