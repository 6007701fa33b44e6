"""Fleet numbers for the dashboard, computed in the database so 10,000 instances stay fast.

* :func:`fleet_summary`: instances and players per region, profile (version) and state:
  one ``GROUP BY``, a few dozen rows whatever the fleet's size.
* :func:`instance_page`: one page of a fleet's instances with filters, read with joins in
  one query (the plain instance list reads its rows one by one and returns all of them).
* :func:`player_series`: allocations and players per profile over a time window, from the
  sessions table (every allocation is a session with its start and end), bucketed in SQL.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from changeover.control.builds.models import Version
from changeover.control.fleet.models import (
    Fleet,
    GameSession,
    Host,
    Instance,
    Profile,
    Region,
    live_instances,
)
from changeover.control.metrics import display_state_sql
from changeover.errors import InvalidInput

STATES = ("staging", "starting", "ready", "allocated", "draining", "stopping", "stopped")
"""Display states in lifecycle order (``failed``/``lost`` and others sort after)."""
MAX_PAGE = 500
MAX_BUCKETS = 120
MAX_WINDOW_S = 30 * 86400


def fleet_summary(s: Session, fleet: Fleet) -> dict[str, Any]:
    state = display_state_sql()
    rows = s.execute(
        select(
            Region.name,
            Profile.name,
            Version.number,
            Version.label,
            state,
            func.count(),
            func.coalesce(func.sum(Instance.players), 0),
            func.coalesce(func.sum(Instance.capacity), 0),
        )
        .select_from(Instance)
        .join(Host, Host.id == Instance.host_id)
        .join(Region, Region.id == Host.region_id)
        .join(Profile, Profile.id == Instance.profile_id)
        .join(Version, Version.id == Profile.version_id)
        .where(Instance.fleet_id == fleet.id, live_instances())
        .group_by(Region.name, Profile.name, Version.number, Version.label, state)
        .order_by(Region.name, Version.number, Profile.name)
    ).tuples()
    regions: dict[str, dict[str, Any]] = {}
    profiles: dict[str, dict[str, Any]] = {}
    total = players = 0
    for region, profile, number, label, st, n, p, cap in rows:
        r = regions.setdefault(
            region, {"region": region, "instances": 0, "players": 0, "capacity": 0, "groups": []}
        )
        r["instances"] += n
        r["players"] += p
        r["capacity"] += cap
        r["groups"].append(
            {"profile": profile, "version": number, "state": str(st), "instances": n, "players": p}
        )
        prof = profiles.setdefault(
            profile,
            {"profile": profile, "version": number, "label": label, "instances": 0, "players": 0},
        )
        prof["instances"] += n
        prof["players"] += p
        total += n
        players += p
    return {
        "fleet": fleet.name,
        "instances": total,
        "players": players,
        "regions": list(regions.values()),
        "profiles": sorted(profiles.values(), key=lambda x: (x["version"], x["profile"])),
        "states": list(STATES),
    }


def instance_page(
    s: Session,
    fleet: Fleet,
    *,
    limit: int,
    offset: int,
    region: str | None = None,
    profile: str | None = None,
    state: str | None = None,
) -> dict[str, Any]:
    """One page of a fleet's live instances, oldest first, with the total that matched.

    Raises:
        InvalidInput: a limit outside 1..MAX_PAGE or a negative offset.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    if offset < 0:
        raise InvalidInput(f"offset must not be negative, got {offset}")
    shown = display_state_sql()
    where = [Instance.fleet_id == fleet.id, live_instances()]
    if region:
        where.append(Region.name == region)
    if profile:
        where.append(Profile.name == profile)
    if state:
        where.append(shown == state)
    base = (
        select()
        .select_from(Instance)
        .join(Host, Host.id == Instance.host_id)
        .join(Region, Region.id == Host.region_id)
        .join(Profile, Profile.id == Instance.profile_id)
        .join(Version, Version.id == Profile.version_id)
        .where(and_(*where))
    )
    total = s.scalar(base.add_columns(func.count()))
    rows = s.execute(
        base.add_columns(
            Instance.id,
            Host.name,
            Region.name,
            Profile.name,
            Version.number,
            shown,
            Instance.players,
            Instance.capacity,
            Instance.port,
            Instance.created_at,
            Instance.sdk_labels,
            Instance.sdk_allocated,
            Instance.sdk_reserved,
            Instance.trial_id,
        )
        .order_by(Instance.id)
        .limit(limit)
        .offset(offset)
    ).tuples()
    return {
        "total": int(total or 0),
        "limit": limit,
        "offset": offset,
        "instances": [
            {
                "id": i,
                "host": host,
                "region": reg,
                "profile": prof,
                "version": number,
                "state": str(st),
                "players": p,
                "capacity": cap,
                "port": port,
                "created_at": created,
                "labels": json.loads(labels or "{}"),
                "allocated": bool(allocated),
                "reserved": bool(reserved),
                "trial_id": trial,
            }
            for (
                i,
                host,
                reg,
                prof,
                number,
                st,
                p,
                cap,
                port,
                created,
                labels,
                allocated,
                reserved,
                trial,
            ) in rows
        ],
    }


def player_series(
    s: Session, *, now: float, window_s: float, buckets: int, fleet: Fleet | None = None
) -> dict[str, Any]:
    """Per profile, allocations in each bucket and players at each bucket's end.

    Raises:
        InvalidInput: a window or bucket count out of range.
    """
    if not 60 <= window_s <= MAX_WINDOW_S:
        raise InvalidInput(f"window_s must be between 60 and {MAX_WINDOW_S}, got {window_s}")
    if not 2 <= buckets <= MAX_BUCKETS:
        raise InvalidInput(f"buckets must be between 2 and {MAX_BUCKETS}, got {buckets}")
    start = now - window_s
    step = window_s / buckets
    ends = [start + step * (k + 1) for k in range(buckets)]
    where = [
        GameSession.created_at < now,
        or_(GameSession.ended_at.is_(None), GameSession.ended_at >= start),
    ]
    if fleet is not None:
        where.append(GameSession.fleet_id == fleet.id)
    # One query, one column per bucket: allocations made in it and players at its end (the
    # sizes of sessions open at that instant). A few dozen CASE sums over the window's
    # sessions; bucketing with CAST would round on PostgreSQL and truncate on SQLite.
    made = [
        func.sum(
            case((and_(GameSession.created_at >= t - step, GameSession.created_at < t), 1), else_=0)
        )
        for t in ends
    ]
    open_at = [
        func.sum(
            case(
                (
                    and_(
                        GameSession.created_at <= t,
                        or_(GameSession.ended_at.is_(None), GameSession.ended_at > t),
                    ),
                    GameSession.size,
                ),
                else_=0,
            )
        )
        for t in ends
    ]
    rows = s.execute(
        select(Profile.name, Version.number, *made, *open_at)
        .select_from(GameSession)
        .join(Instance, Instance.id == GameSession.instance_id)
        .join(Profile, Profile.id == Instance.profile_id)
        .join(Version, Version.id == Profile.version_id)
        .where(and_(*where))
        .group_by(Profile.name, Version.number)
        .order_by(Version.number, Profile.name)
    ).tuples()
    series = [
        {
            "profile": name,
            "version": number,
            "allocations": [int(c or 0) for c in counts[:buckets]],
            "players": [int(c or 0) for c in counts[buckets:]],
        }
        for name, number, *counts in rows
    ]
    return {"start": start, "step_s": step, "ends": ends, "series": series}
