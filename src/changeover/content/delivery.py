"""The delivery index of a version: what a client can download to build it, and sizes.

Published as a signed target beside the manifest (``delivery/<manifest_id>.json``), so a
client knows the exact size of every object before fetching it (a server that sends more
is cut off) and can show a true ETA. ``patches`` lists, per target content, the deltas
from older contents the publisher made; it is empty until patches are built.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from changeover.content.manifest import Manifest, check_path, check_sha256
from changeover.content.store import LocalStore
from changeover.errors import InvalidInput

FORMAT = "changeover.delivery/1"


@dataclass(frozen=True)
class PatchRef:
    base_sha256: str
    path: str
    """Relative to the content tree root."""
    size: int
    sha256: str


@dataclass(frozen=True)
class DeliveryIndex:
    manifest_id: str
    blobs: dict[str, int]
    """Content hash → bytes of its stored (compressed) blob."""
    patches: dict[str, list[PatchRef]] = field(default_factory=dict)
    """Target content hash → patches that produce it."""

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "format": FORMAT,
            "manifest": self.manifest_id,
            "blobs": self.blobs,
            "patches": {
                t: [[p.base_sha256, p.path, p.size, p.sha256] for p in refs]
                for t, refs in sorted(self.patches.items())
            },
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> DeliveryIndex:
        """Raises InvalidInput on anything malformed."""
        try:
            doc = json.loads(raw)
            if doc.get("format") != FORMAT:
                raise InvalidInput("not a delivery index")
            blobs = {check_sha256(k): _size(v) for k, v in dict(doc["blobs"]).items()}
            patches = {
                check_sha256(t): [
                    PatchRef(check_sha256(b), check_path(p), _size(n), check_sha256(h))
                    for b, p, n, h in refs
                ]
                for t, refs in dict(doc.get("patches", {})).items()
            }
            return cls(check_sha256(doc["manifest"]), blobs, patches)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise InvalidInput(f"malformed delivery index: {e}") from None


def _size(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"a size must be a non-negative integer, got {value!r}")
    return value


def build_index(
    store: LocalStore, manifest: Manifest, patches: Mapping[str, list[PatchRef]] | None = None
) -> DeliveryIndex:
    blobs = {h: store.stored_size(h) for h in sorted(manifest.blob_hashes())}
    return DeliveryIndex(manifest.id, blobs, dict(patches or {}))
