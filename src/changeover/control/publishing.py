"""Publishing: make the signed metadata say what the database says.

A reconciler, not an event handler: ``sync`` computes every target that should be
published (a manifest per completed version, a pointer per branch) and publishes only the
difference, so calling it after a branch move, after a version job, on a timer, or after
a crash all converge to the same tree. After a change it asks the CDN to purge exactly the
paths that changed in place (``metadata/timestamp.json``). The client compatibility of
each released client branch (``compat/<image>/<branch>.json``, ``patchjobs.client_compat``)
is a signed target like the pointers, so a launcher trusts it as much.

News feeds (``news/<image>/<branch>.xml``, see ``control.news``) are published the same
way, beside the signed metadata rather than in it: a feed is display text a launcher
shows, not something it trusts, and any feed URL a studio configures (its own blog's
too) must do. A feed is rewritten atomically only when its bytes change, and then purged.
"""

from __future__ import annotations

import json
import logging
import threading

import httpx
from sqlalchemy import select

from changeover.content.bucket import Bucket, BucketConfig
from changeover.content.manifest import check_path
from changeover.content.scan import sha256_bytes
from changeover.content.store import LocalStore
from changeover.content.trust import TrustRepo
from changeover.control.builds.models import Branch, Image, Version
from changeover.control.db import Database
from changeover.control.news import services as news
from changeover.control.news.feed import FEED_ENTRIES, FeedEntry, atom_feed, feed_path
from changeover.control.news.models import NewsEntry
from changeover.control.patchjobs import client_compat
from changeover.control.states import JobState
from changeover.errors import NotFound
from changeover.settings import Settings

log = logging.getLogger("changeover.publishing")


def pointer_path(image: str, branch: str) -> str:
    return f"branches/{image}/{branch}.json"


def manifest_path(manifest_id: str) -> str:
    return f"manifests/{manifest_id}.json"


def delivery_path(manifest_id: str) -> str:
    return f"delivery/{manifest_id}.json"


def open_store(settings: Settings) -> tuple[LocalStore, TrustRepo]:
    """The content store of a data directory (in its bucket, if one is configured) and
    the signed metadata over it, as the server and the ``keys`` commands use them."""
    bucket = None
    if settings.content_bucket:
        bucket = Bucket(BucketConfig.parse(settings.content_bucket, settings.s3_endpoint))
    store = LocalStore(settings.data_dir / "store", bucket)
    repo = TrustRepo(
        store.content,
        settings.data_dir / "keys",
        settings.trust_policy,
        on_written=store.published,
        read_published=store.read_content,
    )
    return store, repo


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
        self._feeds: dict[str, bytes] | None = None
        """The news feeds as last written (read from the tree on the first sync)."""

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

    def on_elected(self) -> None:
        """This replica starts to lead: sign on from what the last leader published, not
        from what this one remembers."""
        with self._lock:
            self.repo.adopt_published()
            self._feeds = None

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
            changed += self._write_feeds(self.desired_feeds())
        if changed:
            self._purge(sorted(set(changed)))
        return changed

    def desired_feeds(self) -> dict[str, bytes]:
        """Content path → the Atom feed of every image branch that has news or automatic
        news (``news.feeds``)."""
        out: dict[str, bytes] = {}
        with self.db.read() as s:
            for image, branch in news.feeds(s):
                rows = s.scalars(
                    select(NewsEntry)
                    .where(NewsEntry.image_id == image.id, NewsEntry.branch == branch)
                    .order_by(NewsEntry.id.desc())
                    .limit(FEED_ENTRIES)
                )
                entries = [FeedEntry(e.id, e.title, e.body, e.link, e.created_at) for e in rows]
                path = feed_path(image.name, branch)
                out[path] = atom_feed(image.name, branch, entries, since=image.created_at)
        return out

    def _write_feeds(self, desired: dict[str, bytes]) -> list[str]:
        """Write the feeds that changed, remove those no longer published; their paths."""
        root = self.store.content
        if self._feeds is None:
            self._feeds = {
                p.relative_to(root).as_posix(): p.read_bytes()
                for p in sorted((root / "news").glob("*/*.xml"))
            }
        changed: list[str] = []
        for path, data in desired.items():
            if self._feeds.get(path) != data:
                check_path(path)
                self.store.write_content(path, data)
                self._feeds[path] = data
                changed.append(path)
        for path in sorted(set(self._feeds) - set(desired)):
            # Every entry deleted, no branch, no automatic news: nothing to show any more.
            self.store.remove_content(path)
            del self._feeds[path]
            changed.append(path)
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
