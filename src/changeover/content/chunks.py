"""Hashes that check an installed file faster than its SHA-256: BLAKE3, and per-chunk SHA-256.

**BLAKE3.** The publisher records, for every content, the BLAKE3 digest of its whole bytes
in the signed delivery index (:mod:`changeover.content.delivery`), computed from the
content in the same pass that checks its SHA-256. BLAKE3 is a cryptographic hash (256-bit
output, collision resistance like SHA-256's) that runs at 3-4 GB/s on one core here where
``hashlib``'s SHA-256 manages about 1. A file whose size matches and whose BLAKE3 is the
recorded one is that content, as surely as if its SHA-256 had been checked.

**Per-chunk SHA-256** (what launchers before BLAKE3 use, and this one with an index made
before BLAKE3).

A file's SHA-256 is one sequential pass: however many cores a host has, hashing a single
large file runs on one of them. So the publisher also records, for every content of at
least ``CHUNKED_FROM`` bytes, the SHA-256 of each ``chunk_bytes`` piece of it (the last one
shorter), in the signed delivery index (:mod:`changeover.content.delivery`). A file whose
size matches and whose every chunk hashes to its recorded digest is that content, as surely
as if its whole-file hash had been checked (SHA-256 is as collision-resistant per chunk as
whole), and the chunks hash in parallel threads: ``hashlib`` releases the GIL while it
hashes a large buffer, and so does reading a file.

The whole-file SHA-256 stays the identity of a content everywhere (manifests, the store,
patches, downloads); BLAKE3 and chunk hashes are only faster ways to check a file already
on disk. A file with a BLAKE3 digest is checked with it; else, with its chunk hashes if
any; else (indexes made before either) with its whole-file SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

from changeover.content.manifest import SHA256_RE, check_sha256
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


def check_blake3(value: object, what: str = "blake3") -> str:
    """A BLAKE3 digest as 64 lowercase hex digits; raises InvalidInput otherwise."""
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):  # the same shape
        raise InvalidInput(f"{what} must be 64 lowercase hex digits, got {value!r}")
    return value


@dataclass(frozen=True)
class ChunkHashes:
    """The fast-check hashes of contents, keyed by content SHA-256: the BLAKE3 of each whole
    content, and the SHA-256 of each ``chunk_bytes`` piece of big ones."""

    chunk_bytes: int = CHUNK_BYTES
    hashes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Content SHA-256 → the SHA-256 of each chunk (big contents only)."""
    blake3_hashes: Mapping[str, str] = field(default_factory=dict)
    """Content SHA-256 → the BLAKE3 of the whole content."""

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
        return bool(self.hashes or self.blake3_hashes)

    def contents(self) -> set[str]:
        """Every content some hash is listed for."""
        return set(self.hashes) | set(self.blake3_hashes)

    def for_content(self, sha256: str, size: int) -> tuple[str, ...] | None:
        """The chunk digests of a content of ``size`` bytes, if known and consistent."""
        found = self.hashes.get(sha256)
        if found is None or len(found) != chunk_count(size, self.chunk_bytes):
            return None
        return found

    def blake3_of(self, sha256: str) -> str | None:
        """The BLAKE3 digest of a content, if known."""
        return self.blake3_hashes.get(sha256)

    def restricted(self, contents: Iterable[str]) -> ChunkHashes:
        """Only the entries of ``contents`` (what one manifest needs)."""
        wanted = sorted(set(contents))
        return ChunkHashes(
            self.chunk_bytes,
            {h: self.hashes[h] for h in wanted if h in self.hashes},
            {h: self.blake3_hashes[h] for h in wanted if h in self.blake3_hashes},
        )

    def to_dict(self) -> dict[str, Any]:
        """The keys present are only those with entries: ``chunk_bytes`` and ``chunks`` for
        chunk hashes, ``blake3`` for BLAKE3 digests."""
        out: dict[str, Any] = {}
        if self.hashes:
            out["chunk_bytes"] = self.chunk_bytes
            out["chunks"] = {h: list(v) for h, v in sorted(self.hashes.items())}
        if self.blake3_hashes:
            out["blake3"] = dict(sorted(self.blake3_hashes.items()))
        return out

    @classmethod
    def from_dict(cls, d: Any) -> ChunkHashes:
        """Either key, ``chunks`` or ``blake3``, may be missing, not both. Raises
        InvalidInput on anything malformed."""
        if not isinstance(d, Mapping):
            raise InvalidInput("chunk hashes must be an object")
        if "chunks" not in d and "blake3" not in d:
            raise InvalidInput("check hashes need a 'chunks' or a 'blake3' object")
        hashes: dict[str, tuple[str, ...]] = {}
        chunk_bytes = d.get("chunk_bytes", CHUNK_BYTES)
        if "chunks" in d:
            raw = d["chunks"]
            if not isinstance(raw, Mapping):
                raise InvalidInput("chunk hashes need a 'chunks' object")
            for content, digests in raw.items():
                check_sha256(content, "chunked content")
                if not isinstance(digests, list) or not digests:
                    raise InvalidInput(f"chunk hashes of {content} must be a non-empty list")
                hashes[content] = tuple(check_sha256(x, "chunk sha256") for x in digests)
            chunk_bytes = d.get("chunk_bytes")
            if not isinstance(chunk_bytes, int):
                raise InvalidInput("chunk hashes need an integer 'chunk_bytes'")
        whole: dict[str, str] = {}
        if "blake3" in d:
            raw3 = d["blake3"]
            if not isinstance(raw3, Mapping):
                raise InvalidInput("'blake3' must be an object")
            for content, digest in raw3.items():
                whole[check_sha256(content, "content")] = check_blake3(digest)
        return cls(chunk_bytes, hashes, whole)


class ChunkHasher:
    """Feed a content's bytes in order; get its SHA-256, its BLAKE3 and, if ``chunked``,
    the SHA-256 of each chunk."""

    def __init__(self, chunk_bytes: int = CHUNK_BYTES, *, chunked: bool = True) -> None:
        self.chunk_bytes = chunk_bytes
        self.chunked = chunked
        self.whole = hashlib.sha256()
        self.whole_blake3 = blake3.blake3()
        self.chunks: list[str] = []
        self._chunk = hashlib.sha256()
        self._filled = 0
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self.whole.update(view)
        self.whole_blake3.update(view)
        self.size += len(view)
        while view and self.chunked:
            take = min(len(view), self.chunk_bytes - self._filled)
            self._chunk.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.chunk_bytes:
                self.chunks.append(self._chunk.hexdigest())
                self._chunk = hashlib.sha256()
                self._filled = 0

    def finish(self) -> tuple[str, tuple[str, ...]]:
        """(whole-file SHA-256, chunk SHA-256s). An empty content has one empty chunk; an
        unchunked hasher gives no chunks."""
        if self.chunked and (self._filled or not self.chunks):
            self.chunks.append(self._chunk.hexdigest())
            self._filled = 0
        return self.whole.hexdigest(), tuple(self.chunks)

    def blake3_hexdigest(self) -> str:
        return self.whole_blake3.hexdigest()


def hash_chunks(
    chunks: Iterable[bytes], sha256: str, chunk_bytes: int = CHUNK_BYTES
) -> tuple[str, ...]:
    """The chunk digests of the bytes ``chunks`` yields, which must hash to ``sha256``.

    Raises:
        IntegrityError: they do not (the chunk digests would describe other content).
    """
    return hash_content(chunks, sha256, chunk_bytes)[0]


def hash_content(
    pieces: Iterable[bytes], sha256: str, chunk_bytes: int = CHUNK_BYTES, *, chunked: bool = True
) -> tuple[tuple[str, ...], str]:
    """(chunk SHA-256s, or () when not ``chunked``; BLAKE3) of the bytes ``pieces`` yields,
    which must hash to ``sha256``.

    Raises:
        IntegrityError: they do not (the digests would describe other content).
    """
    hasher = ChunkHasher(chunk_bytes, chunked=chunked)
    for piece in pieces:
        hasher.update(piece)
    whole, digests = hasher.finish()
    if whole != sha256:
        raise IntegrityError(f"content {sha256}", sha256, whole)
    return digests, hasher.blake3_hexdigest()


def hash_range(
    path: Path,
    start: int,
    length: int,
    buf: bytearray | None = None,
    *,
    algorithm: str = "sha256",
) -> str:
    """The ``algorithm`` (``sha256`` or ``blake3``) digest of ``length`` bytes of ``path``
    from ``start`` (fewer if the file is shorter: the digest then simply differs).

    BLAKE3 runs on the calling thread only (``verify`` spreads files over threads). With
    blake3's own threads (``max_threads``) a 1 GB file in page cache hashed no faster on
    this project's busy 2-core machine (median 2.1-3.2 GB/s against 2.8-3.4 on one thread),
    and a 1.2 GB tree slower (2.3-2.6 GB/s against 3.1)."""
    h: Any
    if algorithm == "blake3":
        h = blake3.blake3()
    elif algorithm == "sha256":
        h = hashlib.sha256()
    else:
        raise InvalidInput(f"unknown hash algorithm {algorithm!r}")
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
    return str(h.hexdigest())
