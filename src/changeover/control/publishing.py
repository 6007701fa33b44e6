"""Publishing: make the signed metadata say what the database says.

A reconciler, not an event handler: ``sync`` computes every target that should be
published (a manifest per completed version, a pointer per branch) and publishes only the
difference, so calling it after a branch move, after a version job, on a timer, or after
a crash all converge to the same tree. After a change it asks the CDN to purge exactly the
paths that changed in place (``metadata/timestamp.json``). The client compatibility of
each released client branch (``compat/<image>/<branch>.json``, ``patchjobs.client_compat``)
is a signed target like the pointers, so a launcher trusts it as much.
"""

from __future__ import annotations

import json
import logging
import threading

import httpx
from sqlalchemy import select

from changeover.content.scan import sha256_bytes
from changeover.content.store import LocalStore
from changeover.content.trust import TrustRepo
from changeover.control.builds.models import Branch, Image, Version
from changeover.control.db import Database
from changeover.control.patchjobs import client_compat
from changeover.control.states import JobState
from changeover.errors import NotFound

log = logging.getLogger("changeover.publishing")


def pointer_path(image: str, branch: str) -> str:
    return f"branches/{image}/{branch}.json"


def manifest_path(manifest_id: str) -> str:
    return f"manifests/{manifest_id}.json"


def delivery_path(manifest_id: str) -> str:
    return f"delivery/{manifest_id}.json"


class Publisher:
    def __init__(
        self, db: Database, store: LocalStore, repo: TrustRepo, purge_url: str | None = None
    ) -> None:
        self.db = db
        self.store = store
        self.repo = repo
        self.purge_url = purge_url
        self._lock = threading.Lock()
        self._deliveries: dict[str, bytes] = {}

    def desired(self) -> dict[str, bytes | str]:
        """Target path → bytes, or → sha256 where the bytes are costly and rarely needed."""
        out: dict[str, bytes | str] = {}
        with self.db.read() as s:
            for manifest_id in s.scalars(
                select(Version.manifest_id).where(Version.status == JobState.COMPLETED).distinct()
            ):
                out[manifest_path(manifest_id)] = manifest_id  # its hash is its name
                delivery = self._delivery(manifest_id)
                if delivery is not None:
                    out[delivery_path(manifest_id)] = delivery
            rows = s.execute(
                select(Branch, Image, Version)
                .join(Image, Branch.image_id == Image.id)
                .join(Version, Branch.version_id == Version.id)
            )
            for branch, image, version in rows:
                pointer = {
                    "image": image.name,
                    "branch": branch.name,
                    "version": version.number,
                    "label": version.label,
                    "manifest": version.manifest_id,
                }
                out[pointer_path(image.name, branch.name)] = json.dumps(
                    pointer, sort_keys=True
                ).encode()
            # What the live servers accept of each released client (launcher.compat).
            out.update(client_compat.targets(s))
        return out

    def _delivery(self, manifest_id: str) -> bytes | None:
        # Immutable once written by the version job, so read each one once.
        if manifest_id not in self._deliveries:
            try:
                self._deliveries[manifest_id] = self.store.get_private(delivery_path(manifest_id))
            except NotFound:
                return None
        return self._deliveries[manifest_id]

    def sync(self) -> list[str]:
        """Publish what differs; returns the purged paths (empty if nothing changed)."""
        with self._lock:
            current = self.repo.current_targets()
            changes: dict[str, bytes | None] = {}
            for path, want in self.desired().items():
                digest = want if isinstance(want, str) else sha256_bytes(want)
                if current.get(path) == digest:
                    continue
                if isinstance(want, str):
                    changes[path] = self.store.get_manifest(want).canonical_bytes()
                else:
                    changes[path] = want
            changed = self.repo.publish(changes) if changes else []
            changed += self.repo.refresh()
        if changed:
            self._purge(sorted(set(changed)))
        return changed

    def _purge(self, paths: list[str]) -> None:
        if not self.purge_url:
            return
        try:
            r = httpx.post(
                self.purge_url, json={"paths": [f"content/{p}" for p in paths]}, timeout=10
            )
            r.raise_for_status()
        except httpx.HTTPError as e:
            # The metadata is published either way; a stale CDN copy expires on its own.
            log.warning("CDN purge of %s via %s failed: %s", paths, self.purge_url, e)
