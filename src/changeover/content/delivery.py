"""The delivery index of a version: what a client can download to build it, and sizes.

Published as a signed target beside the manifest (``delivery/<manifest_id>.json``), so a
client knows the exact size of every object before fetching it (a server that sends more
is cut off), can show a true ETA, and can plan with the patches the publisher made
(:mod:`changeover.content.publish`) from the previous versions' contents. For each big
content it also lists per-chunk SHA-256s (:mod:`changeover.content.chunks`), with which a
host checks an installed file on all its cores; the keys ``chunk_bytes`` and ``chunks`` are
optional (an index without them is still valid: hosts then hash whole files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from changeover.content.chunks import CHUNK_BYTES, CHUNKED_FROM, ChunkHashes, hash_chunks
from changeover.content.manifest import Manifest, check_sha256
from changeover.content.publish import PatchIndex
from changeover.content.store import LocalStore
from changeover.errors import InvalidInput

FORMAT = "changeover.delivery/1"


@dataclass(frozen=True)
class DeliveryIndex:
    manifest_id: str
    blobs: dict[str, int]
    """Content hash → bytes of its stored (compressed) blob."""
    patches: PatchIndex
    chunks: ChunkHashes = field(default_factory=ChunkHashes)
    """Per-chunk SHA-256s of the big contents (empty for an index made without them)."""

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
            chunks = ChunkHashes.from_dict(doc) if "chunks" in doc else ChunkHashes()
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise InvalidInput(f"malformed delivery index: {e}") from None
        if patches.manifest_id != manifest_id:
            raise InvalidInput("the delivery index's patches belong to another manifest")
        if any(h not in blobs for h in chunks.hashes):
            raise InvalidInput("the delivery index has chunk hashes of a content it lacks")
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
) -> DeliveryIndex:
    """The delivery index of ``manifest``; contents of at least ``chunked_from`` bytes get
    chunk hashes (one decompression of each such blob, which is also checked whole).

    Raises:
        NotFound: a blob is not in the store.
        IntegrityError: a stored blob does not decompress to its hash.
    """
    blobs = {h: store.stored_size(h) for h in sorted(manifest.blob_hashes())}
    big = sorted({f.sha256 for f in manifest if f.link is None and f.size >= chunked_from})
    chunks = ChunkHashes(
        chunk_bytes, {h: hash_chunks(store.open_blob(h), h, chunk_bytes) for h in big}
    )
    return DeliveryIndex(manifest.id, blobs, patches or PatchIndex(manifest.id, {}), chunks)
