"""The delivery index of a version: what a client can download to build it, and sizes.

Published as a signed target beside the manifest (``delivery/<manifest_id>.json``), so a
client knows the exact size of every object before fetching it (a server that sends more
is cut off), can show a true ETA, and can plan with the patches the publisher made
(:mod:`changeover.content.publish`) from the previous versions' contents. For checking
installed files fast (:mod:`changeover.content.chunks`) it also lists the BLAKE3 digest of
every content (key ``blake3``: content SHA-256 → BLAKE3) and the per-chunk SHA-256s of each
big content (keys ``chunk_bytes`` and ``chunks``). These keys are optional: an index without
them (made before them) is still valid, and hosts then check with SHA-256. Being inside a
signed target, they are covered by the same TUF signature as the rest of the index (the
targets metadata signs the index's length and SHA-256). SHA-256 stays the name of every
content.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from changeover.content.chunks import CHUNK_BYTES, CHUNKED_FROM, ChunkHashes, hash_content
from changeover.content.manifest import Manifest, check_sha256
from changeover.content.patch_index import PatchIndex
from changeover.errors import InvalidInput

if TYPE_CHECKING:  # the launcher imports this module; the store is the server's (fcntl)
    from changeover.content.store import LocalStore

FORMAT = "changeover.delivery/1"


@dataclass(frozen=True)
class DeliveryIndex:
    manifest_id: str
    blobs: dict[str, int]
    """Content hash → bytes of its stored (compressed) blob."""
    patches: PatchIndex
    chunks: ChunkHashes = field(default_factory=ChunkHashes)
    """BLAKE3 of every content and per-chunk SHA-256s of the big ones (empty for an index
    made without them)."""

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "format": FORMAT,
            "manifest": self.manifest_id,
            "blobs": self.blobs,
            "patches": self.patches.to_dict(),
        }
        if self.chunks:
            doc.update(self.chunks.to_dict())
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> DeliveryIndex:
        """Raises InvalidInput on anything malformed."""
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise InvalidInput("not a delivery index")
            manifest_id = check_sha256(doc["manifest"], "manifest id")
            blobs = {check_sha256(k): _size(v) for k, v in dict(doc["blobs"]).items()}
            patches = PatchIndex.from_dict(doc["patches"])
            has_checks = "chunks" in doc or "blake3" in doc
            chunks = ChunkHashes.from_dict(doc) if has_checks else ChunkHashes()
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise InvalidInput(f"malformed delivery index: {e}") from None
        if patches.manifest_id != manifest_id:
            raise InvalidInput("the delivery index's patches belong to another manifest")
        if any(h not in blobs for h in chunks.contents()):
            raise InvalidInput("the delivery index has hashes of a content it lacks")
        return cls(manifest_id, blobs, patches, chunks)


def _size(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"a size must be a non-negative integer, got {value!r}")
    return value


def build_index(
    store: LocalStore,
    manifest: Manifest,
    patches: PatchIndex | None = None,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    chunked_from: int = CHUNKED_FROM,
    with_blake3: bool = True,
    workers: int | None = None,
) -> DeliveryIndex:
    """The delivery index of ``manifest``: every content gets its BLAKE3 (unless not
    ``with_blake3``), contents of at least ``chunked_from`` bytes chunk hashes. Each blob
    hashed is decompressed once and checked against its SHA-256 in the same pass, on up to
    ``workers`` threads (default: one per core; zstd and the hashes release the GIL).

    Raises:
        NotFound: a blob is not in the store.
        IntegrityError: a stored blob does not decompress to its hash.
    """
    blobs = {h: store.stored_size(h) for h in sorted(manifest.blob_hashes())}
    sizes = {f.sha256: f.size for f in manifest if f.link is None}
    big = {h for h, size in sizes.items() if size >= chunked_from}
    todo = sorted(sizes if with_blake3 else big, key=lambda h: (-sizes[h], h))

    def digests(h: str) -> tuple[str, tuple[str, ...], str]:
        chunks, b3 = hash_content(store.open_blob(h), h, chunk_bytes, chunked=h in big)
        return h, chunks, b3

    threads = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    with ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(digests, todo))
    chunks = ChunkHashes(
        chunk_bytes,
        {h: c for h, c, _ in sorted(found) if h in big},
        {h: b3 for h, _, b3 in sorted(found)} if with_blake3 else {},
    )
    return DeliveryIndex(manifest.id, blobs, patches or PatchIndex(manifest.id, {}), chunks)
