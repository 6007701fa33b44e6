"""What an agent is told at a sync: its host's desired state, whole or as changes.

The whole state lists every live instance of the host (the agent stops what is not
listed). An agent that gives the revision of the answer it last applied (``since``) gets
only the instances that changed since ``since - quiet.MARGIN_S`` (``instances.sync_changed_at``)
and the ids of those that are no longer live (``gone``: stop them, forget them once
stopped); a revision older than ``quiet.FULL_AFTER_S`` gets the whole state again, which
also covers rows pruned meanwhile. Either way the answer carries its own ``revision``: the
database's clock read before the sync read anything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from changeover.control.builds.models import Version
from changeover.control.fleet import trials
from changeover.control.fleet.models import (
    Fleet,
    FleetHost,
    Host,
    Instance,
    Profile,
    live_instances,
    live_sql,
)
from changeover.control.fleet.pacing import SyncPacer
from changeover.control.fleet.quiet import FULL_AFTER_S, MARGIN_S
from changeover.control.patchjobs import storage as patchjob_storage


def _changed(s: Session, host_id: int, since: float) -> dict[int, bool]:
    """The host's instances changed since ``since`` less the margin: whether each is live
    (by this very read: a row another transaction changed since ours read it is told as
    it is now, or at the next sync)."""
    rows = s.execute(
        select(Instance.id, live_instances()).where(
            Instance.host_id == host_id, Instance.sync_changed_at > since - MARGIN_S
        )
    )
    return {instance_id: bool(live) for instance_id, live in rows}


def answer(
    s: Session,
    host: Host,
    rows: Sequence[Instance],
    *,
    revision: float,
    since: float | None,
    now: float,
    pacer: SyncPacer | None = None,
) -> dict[str, Any]:
    """The desired state of ``host`` (see the module docstring): ``rows`` are its live
    instances, all of them for a whole answer, at least those changed since ``since`` for
    changes; the sync interval asked for is ``pacer``'s."""
    full = since is None or revision - since > FULL_AFTER_S
    changed = {} if full or since is None else _changed(s, host.id, since)
    listed = list(rows) if full else [i for i in rows if changed.get(i.id)]
    fleet_profiles = set(
        s.scalars(
            select(Fleet.active_profile_id)
            .join(FleetHost, FleetHost.fleet_id == Fleet.id)
            .where(FleetHost.host_name == host.name, Fleet.active_profile_id.is_not(None))
        )
    )
    stage_profiles = patchjob_storage.stage_requests(s, host.name)
    running = s.scalars(
        select(Instance.profile_id).distinct().where(Instance.host_id == host.id, live_sql())
    )
    profile_ids = {i.profile_id for i in rows} | set(running) | fleet_profiles | stage_profiles
    profiles = {p.id: p for p in s.scalars(select(Profile).where(Profile.id.in_(profile_ids)))}
    manifests = dict(
        s.execute(
            select(Version.id, Version.manifest_id).where(
                Version.id.in_({p.version_id for p in profiles.values()})
            )
        ).all()
    )
    fleets = dict(
        s.execute(
            select(Fleet.id, Fleet.name).where(Fleet.id.in_({i.fleet_id for i in listed}))
        ).all()
    )
    specs = {
        p.id: json.loads(p.spec)
        for p in profiles.values()
        if p.id in {i.profile_id for i in listed}
    }
    # A build machine trial runs its update's build, not its profile's version (``trials``).
    trial_ids = {i.trial_id for i in listed if i.trial_id is not None}
    trial_builds = trials.manifests(s, trial_ids) if trial_ids else {}
    instances = []
    for i in listed:
        p = profiles[i.profile_id]
        notice = (
            {"reason": i.notice_reason, "deadline": i.notice_deadline}
            if i.notice_deadline is not None
            else None
        )
        item = {
            "id": i.id,
            "fleet": fleets[i.fleet_id],
            "profile": p.name,
            "manifest_id": (
                trial_builds[i.trial_id] if i.trial_id is not None else manifests[p.version_id]
            ),
            "spec": specs[p.id],
            "desired": i.desired,
            "notice": notice,
            "slot": i.slot,
        }
        if i.stop_signal is not None:
            # A patch job's stop method overrides the profile's for this instance.
            item["stop"] = {"signal": i.stop_signal, "timeout_s": i.stop_timeout_s}
        instances.append(item)
    return {
        "host": {"id": host.id, "name": host.name},
        "sync_interval_s": (pacer or SyncPacer()).interval_for(s, now),
        "revision": revision,
        "full": full,
        "instances": instances,
        "gone": sorted(i for i, live in changed.items() if not live),
        "versions": sorted({manifests[p.version_id] for p in profiles.values()}),
    }


__all__ = ["answer"]
