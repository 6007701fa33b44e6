"""The client compatibility the launcher reads: ``compat/<image>/<branch>.json``, signed.

For every client branch a patch job releases (``client_release``), the publisher signs a
small document listing the client ranges the live servers of that job's fleets declare
(the fleets of every job that names the branch, whatever its status: they are the servers
that branch's players meet). ``launcher.compat`` tells a player from it that the servers
no longer accept their client ("update required")::

    {"image": "arena-client", "branch": "production",
     "accepts": [{"client_min": null, "client_max": "1.5"}, …],   # one per distinct range
     "client_min": "1.2"}        # the lowest client a live server accepts; null: no bound

A live server is an instance meant to run (running or draining) that is not stopped,
failed or lost. A server version that declares no range accepts every client (both bounds
null). No live server: ``accepts`` is empty (the launcher cannot tell). The document
changes only when the set of ranges does, not with every instance that comes and goes.
"""

from __future__ import annotations

import json
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from changeover.content import client_versions
from changeover.control.builds.models import Image
from changeover.control.fleet.models import Instance, Profile, VersionCompat, fleet_member
from changeover.control.patchjobs.records import PatchJob

NOT_LIVE: Final = ("stopped", "failed", "lost")


def compat_path(image: str, branch: str) -> str:
    return f"compat/{image}/{branch}.json"


def _links(s: Session) -> dict[tuple[int, str], set[int]]:
    """(client image id, branch) -> the fleets of every job that releases it."""
    links: dict[tuple[int, str], set[int]] = {}
    # A prefilter in SQL (stored specs are JSON written with sort_keys), then the JSON.
    for raw in s.scalars(select(PatchJob.spec).where(PatchJob.spec.like('%"client_release": {%'))):
        stored = json.loads(raw)
        release = stored.get("client_release")
        if not release:
            continue
        key = (int(release["image_id"]), str(release["branch"]))
        links.setdefault(key, set()).update(int(f) for f in stored["fleet_ids"])
    return links


def document(image: str, branch: str, ranges: set[tuple[str | None, str | None]]) -> bytes:
    """The signed document's bytes (module docstring), stable for the same ranges."""

    def order(r: tuple[str | None, str | None]) -> tuple[Any, ...]:
        lo, hi = r
        return (
            lo is not None,
            client_versions.parse(lo) if lo else (),
            hi is None,
            client_versions.parse(hi) if hi else (),
        )

    ordered = sorted(ranges, key=order)
    mins = [lo for lo, _ in ordered]
    floor = None
    if mins and all(m is not None for m in mins):
        floor = min((m for m in mins if m is not None), key=client_versions.parse)
    doc = {
        "image": image,
        "branch": branch,
        "accepts": [{"client_min": lo, "client_max": hi} for lo, hi in ordered],
        "client_min": floor,
    }
    return json.dumps(doc, sort_keys=True).encode()


def targets(s: Session) -> dict[str, bytes]:
    """Content path -> document, for every client branch a job releases."""
    links = _links(s)
    if not links:
        return {}
    fleets = {f for fs in links.values() for f in fs}
    live = s.execute(
        select(Instance.fleet_id, Profile.version_id)
        .join(Profile, Profile.id == Instance.profile_id)
        .where(
            Instance.fleet_id.in_(fleets),
            fleet_member(),
            Instance.desired != "stopped",
            Instance.state.not_in(NOT_LIVE),
        )
        .distinct()
    ).all()
    versions = {v for _, v in live}
    declared = {
        row.version_id: (row.client_min, row.client_max)
        for row in s.scalars(select(VersionCompat).where(VersionCompat.version_id.in_(versions)))
    }
    names = {
        i.id: i.name
        for i in s.scalars(select(Image).where(Image.id.in_({img for img, _ in links})))
    }
    out: dict[str, bytes] = {}
    for (image_id, branch), its_fleets in sorted(links.items()):
        if image_id not in names:
            continue
        ranges = {declared.get(v, (None, None)) for f, v in live if f in its_fleets}
        out[compat_path(names[image_id], branch)] = document(names[image_id], branch, ranges)
    return out


__all__ = ["compat_path", "document", "targets"]
