"""Hosts and their agents: registration, and the sync that is also the heartbeat.

An agent registers its name, region, slots and ``agent_uid`` (kept in its work directory,
so a restarted agent is the same agent). It then calls sync about once a second with what
it observes; the answer is the full desired state of its host. Sync is idempotent: a lost
answer is simply asked for again, and an agent or control plane that restarts converges
at the next call. Within one sync transaction:

1. the host's heartbeat is recorded (a host not seen for ``LOST_AFTER_S`` is lost: its
   instances are not allocated, but they are not stopped either — players may still be on
   them, and the agent re-adopts them when it comes back);
2. the observed state of each of its instances is stored, and sessions are followed from
   the players the game reports through the SDK (``sessions.track``);
3. ``placement.plan_host`` decides what should change on this host, and that is applied;
4. the desired instances of the host are returned.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from functools import partial
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError as SQLIntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from changeover.control.builds.services import check_name
from changeover.control.db import rowcount
from changeover.control.fleet import desired, launch, placement, quiet, sessions, standins
from changeover.control.fleet.exits import describe_exit
from changeover.control.fleet.models import (
    Fleet,
    FleetHost,
    Host,
    Instance,
    Profile,
    fleet_member,
    live_sql,
)
from changeover.control.fleet.pacing import SyncPacer
from changeover.control.fleet.placement import DRAIN_S, NOTICE_S
from changeover.control.fleet.quiet import SyncMemory
from changeover.control.fleet.services import LOST_AFTER_S, get_region
from changeover.control.patchjobs import storage as patchjob_storage
from changeover.control.patchjobs.job_view import db_clock
from changeover.errors import Conflict, InvalidInput, NotFound

log = logging.getLogger("changeover.fleet")
AGENT_UID_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")
OBSERVED_STATES = frozenset({"staging", "starting", "ready", "stopping", "stopped", "failed"})
EXIT_HOWS = frozenset({"exited", "killed", "crashed"})
MAX_SLOTS = 10000


def is_alive(host: Host, now: float) -> bool:
    return now - host.last_seen_at < LOST_AFTER_S


def holder_conflict(host: Host, agent_uid: str, now: float) -> str | None:
    """Why an agent may not take ``host``'s name, or None if it may.

    The same ``agent_uid`` is the same agent (restarted) and always may. Another one may
    only take a name whose holder has gone quiet (a replaced machine).
    """
    if host.agent_uid == agent_uid:
        return None
    age = now - host.last_seen_at
    if age >= LOST_AFTER_S:
        return None
    return (
        f"host name {host.name!r} is held by a live agent (last heard from {age:.1f} s ago);"
        " stop that agent or give this one another --name"
    )


def register(
    s: Session,
    *,
    name: str,
    region: str,
    slots: int,
    agent_uid: str,
    address: str,
    agent_version: str,
    now: float,
) -> Host:
    """Register (or re-register) an agent under a host name.

    Raises:
        InvalidInput: a bad name, uid, address or slot count. NotFound: unknown region.
        Conflict: the name is held by another live agent.
    """
    check_name(name, "host name")
    if not AGENT_UID_RE.fullmatch(agent_uid):
        raise InvalidInput("agent_uid must be 8-64 characters of [A-Za-z0-9_-]")
    if isinstance(slots, bool) or not 1 <= slots <= MAX_SLOTS:
        raise InvalidInput(f"slots must be 1 to {MAX_SLOTS}")
    if not address or len(address) > 255 or any(c.isspace() for c in address):
        raise InvalidInput("address must be a host name or IP address players can reach")
    region_row = get_region(s, region)
    host = s.scalar(select(Host).where(Host.name == name))
    if host is None:
        host = Host(name=name, registered_at=now, staged="[]")
        s.add(host)
    else:
        why = holder_conflict(host, agent_uid, now)
        if why is not None:
            raise Conflict(why, host=name)
        if host.agent_uid != agent_uid:
            host.registered_at = now
    host.region_id = region_row.id
    host.slots = slots
    host.agent_uid = agent_uid
    host.address = address
    host.agent_version = agent_version[:40]
    host.last_seen_at = now
    try:
        s.flush()
    except SQLIntegrityError as e:  # two new agents raced for one new name
        raise Conflict(f"host name {name!r} was just taken by another agent", host=name) from e
    return host


def list_hosts(s: Session) -> list[Host]:
    return list(s.scalars(select(Host).order_by(Host.name)))


def _profile_capacity(s: Session, profile_id: int) -> int:
    return s.get_one(Profile, profile_id).capacity


def get_host(s: Session, host_id: int, agent_uid: str) -> Host:
    host = s.get(Host, host_id)
    if host is None:
        raise NotFound(f"no host with id {host_id}; register the agent again", host_id=host_id)
    if host.agent_uid != agent_uid:
        raise Conflict(
            f"host {host.name} is now held by another agent; this one must stop"
            " (or register again once the other is gone)",
            host=host.name,
        )
    return host


def _observe(
    row: Instance, obs: Mapping[str, Any], now: float, profile_capacity: Callable[[], int]
) -> None:
    """Store what the agent says of ``row``. Most syncs repeat the last one: then nothing
    is written (``observed_at`` is when the agent last reported a change; its heartbeat
    is the host's ``last_seen_at``). When the game's allocation changes (Agones' SDK:
    allocated, reserved, its player capacity), ``capacity`` follows: ``sdk_capacity``."""
    state = obs.get("state")
    if state not in OBSERVED_STATES:
        raise InvalidInput(f"instance {row.id}: unknown observed state {state!r}")
    port, pid, restarts = obs.get("port"), obs.get("pid"), obs.get("restarts")
    ports, error = obs.get("ports"), obs.get("error")
    seen: dict[str, Any] = {
        "state": state,
        "port": port if isinstance(port, int) and 0 < port < 65536 else None,
        "ports": json.dumps(ports if isinstance(ports, dict) else {}, sort_keys=True),
        "pid": pid if isinstance(pid, int) and pid > 0 else None,
        "restarts": restarts if isinstance(restarts, int) and restarts >= 0 else row.restarts,
        "error": str(error)[:4000] if error else None,
    }
    seen.update(_exit_columns(obs.get("exit")))
    sdk = obs.get("sdk")
    if isinstance(sdk, dict):
        players, labels = sdk.get("players"), sdk.get("labels")
        seen["sdk_ready"] = bool(sdk.get("ready"))
        seen["sdk_players"] = json.dumps(
            sorted(map(str, players)) if isinstance(players, list) else []
        )
        seen["sdk_labels"] = json.dumps(labels if isinstance(labels, dict) else {}, sort_keys=True)
        seen["sdk_state_saved"] = bool(sdk.get("state_saved"))
        annotations, capacity = sdk.get("annotations"), sdk.get("player_capacity")
        seen["sdk_annotations"] = json.dumps(
            annotations if isinstance(annotations, dict) else {}, sort_keys=True
        )
        seen["sdk_allocated"] = bool(sdk.get("allocated"))
        seen["sdk_reserved"] = bool(sdk.get("reserved"))
        seen["sdk_player_capacity"] = (
            capacity
            if isinstance(capacity, int) and not isinstance(capacity, bool) and capacity >= 0
            else None
        )
    changed = {k: v for k, v in seen.items() if getattr(row, k) != v}
    if not changed:
        return
    if changed.keys() & {"sdk_allocated", "sdk_reserved", "sdk_player_capacity"}:
        changed["capacity"] = (
            0  # a trial's server takes no players, whatever its game says (``trials``)
            if row.trial_id is not None
            else sdk_capacity(
                profile_capacity(),
                seen["sdk_allocated"],
                seen["sdk_reserved"],
                seen["sdk_player_capacity"],
            )
        )
    if state == "ready" and row.ready_at is None:
        row.ready_at = now
    elif state in ("staging", "starting", "failed"):
        row.ready_at = None  # restarted: ready again only once it says so
    if state == "stopped" and row.state != "stopped":
        row.stopped_at = now
    if changed.get("sdk_state_saved"):
        row.state_saved_at = now
    for key, value in changed.items():
        setattr(row, key, value)
    row.observed_at = now
    row.updated_at = now


def sdk_capacity(
    profile_capacity: int, allocated: bool, reserved: bool, player_capacity: int | None
) -> int:
    """The places an instance takes now: none while its game is allocated or reserved
    (Agones' SDK: it is in a match, or holds itself back), else the player capacity the
    game set, else its profile's. Allocation fills up to it (``players < capacity``)."""
    if allocated or reserved:
        return 0
    return player_capacity if player_capacity is not None else profile_capacity


def _exit_columns(raw: object) -> dict[str, Any]:
    """The ``exit_*`` columns from an agent's ``exit`` (how the last process ended)."""
    if not isinstance(raw, Mapping) or raw.get("how") not in EXIT_HOWS:
        return {}
    code, sig, reason, at = raw.get("code"), raw.get("signal"), raw.get("reason"), raw.get("at")
    return {
        "exit_how": raw["how"],
        "exit_code": code if isinstance(code, int) and not isinstance(code, bool) else None,
        "exit_signal": str(sig)[:16] if sig else None,
        "exit_reason": str(reason)[:32] if reason else None,
        "exited_at": float(at) if isinstance(at, int | float) else None,
    }


def _report_exit(s: Session, row: Instance, host: Host, now: float) -> None:
    """A job that owns the instance's fleet gets an event for each process end. A crash
    says what the agent saw of it (its game's last log line), so whoever watches the job
    learns why without a shell on the host."""
    text = f"instance {row.id} on {host.name} {describe_exit(row)}"
    if row.exit_how == "crashed" and row.error:
        text += f": {row.error[:500]}"
    for job in patchjob_storage.owning_jobs(s, row.fleet_id):
        patchjob_storage.add_event(
            s,
            job,
            "instance",
            text,
            now,
            {
                "instance_id": row.id,
                "host": host.name,
                "how": row.exit_how,
                "exit_code": row.exit_code,
                "signal": row.exit_signal,
                "reason": row.exit_reason,
            },
        )


def _views(rows: Sequence[Instance], host: Host) -> list[placement.InstanceView]:
    return [
        placement.InstanceView(
            instance_id=i.id,
            fleet_id=i.fleet_id,
            profile_id=i.profile_id,
            host=host.name,
            desired=i.desired,
            state=i.state,
            players=i.players,
            replaces_id=i.replaces_id,
            standin_for=i.standin_for,
            drain_deadline=i.drain_deadline,
            drain_reason=i.drain_reason,
            notice_deadline=i.notice_deadline,
            created_at=i.created_at,
            error=i.error,
        )
        for i in rows
    ]


def _is_live(i: Instance) -> bool:
    return i.desired != "stopped" or i.state != "stopped"


def _host_rows(
    s: Session, host: Host, also: Iterable[int] = (), lean: tuple[Set[int], float] | None = None
) -> list[Instance]:
    """The host's live instances and those of ``also`` (ids the agent reports), by id: one
    lock order for every writer of these rows. ``lean``: (fleets jobs own, a time): of
    those fleets, only the instances handed over (a job's stop set ``stop_signal``) or
    changed since the time; the others are the jobs' (a sync of a big host in the middle
    of a job reads a few rows, not all)."""
    q = select(Instance).where(Instance.host_id == host.id, live_sql())
    if lean is not None and lean[0]:
        owned, changed_after = lean
        q = q.where(
            or_(
                Instance.fleet_id.not_in(owned),
                Instance.stop_signal.is_not(None),
                Instance.sync_changed_at > changed_after,
            )
        )
    rows = {i.id: i for i in s.scalars(q)}
    others = set(also) - rows.keys()  # stopped ones the agent still reports: by key
    if others:
        rows.update(
            (i.id, i)
            for i in s.scalars(
                select(Instance).where(Instance.host_id == host.id, Instance.id.in_(others))
            )
        )
    return [rows[k] for k in sorted(rows)]


def _owned_taken(s: Session, host: Host, owned: Set[int]) -> int:
    """The slots the instances of fleets jobs own take on ``host``."""
    if not owned:
        return 0
    return (
        s.scalar(
            select(func.count(Instance.id)).where(
                Instance.host_id == host.id,
                live_sql(),
                Instance.fleet_id.in_(owned),
                Instance.desired != "stopped",
            )
        )
        or 0
    )


def assign_slot(s: Session, row: Instance, exclusive: bool) -> None:
    """Give ``row`` (from before slots) its state slot on its host (``launch.choose_slots``)."""
    x = launch.Launch(row.fleet_id, row.profile_id, row.host_id, row.replaces_id)
    row.slot = launch.choose_slots(s, [x], [exclusive], skip_id=row.id)[0]


def new_instance(
    s: Session, fleet_id: int, profile_id: int, host_id: int, now: float, replaces_id: int | None
) -> Instance:
    """One new instance row, in the session (a patch job's many: ``launch.create``)."""
    x = launch.Launch(fleet_id, profile_id, host_id, replaces_id)
    capacity, exclusive = launch.is_exclusive(s, profile_id)
    row = Instance(**launch.values(x, capacity, launch.choose_slots(s, [x], [exclusive])[0], now))
    s.add(row)
    return row


def apply(s: Session, row: Instance, action: placement.Action, now: float) -> None:
    """Record one placement action on an instance row (creation is ``new_instance``)."""
    if isinstance(action, placement.Drain):
        row.desired = "draining"
        row.drain_reason = action.reason[:256]
        row.drain_deadline = action.deadline
    elif isinstance(action, placement.Notify):
        row.notice_reason = action.reason[:256]
        row.notice_deadline = action.deadline
    elif isinstance(action, placement.Stop):
        row.desired = "stopped"
        if row.notice_deadline is None:  # a notice already given keeps its words
            row.notice_reason = action.reason[:256]
            row.notice_deadline = action.deadline
    row.updated_at = now


def _plan(
    s: Session,
    host: Host,
    all_rows: list[Instance],
    now: float,
    replace_lost_after_s: float | None = None,
    *,
    owned: Set[int],
    taken: int,
) -> list[Instance]:
    """Re-plan ``host`` from its live instances ``all_rows``; the instances it creates.
    ``owned``: the fleets running jobs own (``all_rows`` need hold only those of their
    instances the jobs handed over); ``taken``: the slots those fleets' instances take.
    ``replace_lost_after_s``: give it the stand-ins it takes for hosts lost that long
    (``standins``); None: none."""
    # The fleets a running patch job owns: the job starts, drains and stops their
    # instances, so placement never creates, scales down or drains there on its own (the
    # two would fight). It still applies its drain rules (stop when empty, notice, stop at
    # the deadline) to the instances the job handed over: a stop that found players and
    # fell back to draining (``stop_signal`` set by the job).
    rows = [i for i in all_rows if i.fleet_id not in owned and i.trial_id is None]
    # A trial's instance is no fleet's (``trials``), but it takes a slot all the same (in
    # an owned fleet, ``taken`` counts it already).
    taken += sum(
        1
        for i in all_rows
        if i.trial_id is not None and i.fleet_id not in owned and i.desired != "stopped"
    )
    handed_over = [i for i in all_rows if i.fleet_id in owned and i.stop_signal is not None]
    if handed_over:
        drains = placement.plan_host(
            placement.HostView(host.name, alive=True, slots=host.slots),
            [],
            _views(handed_over, host),
            now,
            drain_s=DRAIN_S,
            notice_s=NOTICE_S,
        )
        by_owned_id = {i.id: i for i in all_rows}
        for action in drains:
            if not isinstance(action, placement.Create):
                apply(s, by_owned_id[action.instance_id], action, now)
    fleet_ids = {i.fleet_id for i in rows} | set(
        s.scalars(select(FleetHost.fleet_id).where(FleetHost.host_name == host.name))
    )
    fleet_ids -= owned
    specs = []
    for fleet in s.scalars(select(Fleet).where(Fleet.id.in_(fleet_ids))):
        names = s.scalars(select(FleetHost.host_name).where(FleetHost.fleet_id == fleet.id))
        specs.append(
            placement.FleetSpec(
                fleet.id, fleet.active_profile_id, fleet.instances_per_host, frozenset(names)
            )
        )
    # Slots taken by the owned fleets' instances count, so placement does not overfill.
    view = placement.HostView(host.name, alive=True, slots=host.slots - taken)
    by_id = {i.id: i for i in rows}
    created = []
    back = _alive(s, {i.standin_for for i in rows if i.standin_for is not None}, now)
    for action in placement.plan_host(
        view, specs, _views(rows, host), now, drain_s=DRAIN_S, notice_s=NOTICE_S, alive_hosts=back
    ):
        if isinstance(action, placement.Create):
            created.append(new_instance(s, action.fleet_id, action.profile_id, host.id, now, None))
        else:
            apply(s, by_id[action.instance_id], action, now)
    if replace_lost_after_s is not None:
        free = view.slots - sum(i.desired != "stopped" for i in rows) - len(created)
        created += _stand_ins(s, host, specs, free, now, replace_lost_after_s)
    s.flush()
    return created


def _alive(s: Session, names: set[str], now: float) -> frozenset[str]:
    if not names:
        return frozenset()
    return frozenset(
        s.scalars(
            select(Host.name).where(Host.name.in_(names), Host.last_seen_at > now - LOST_AFTER_S)
        )
    )


def _stand_ins(
    s: Session,
    host: Host,
    specs: Sequence[placement.FleetSpec],
    free: int,
    now: float,
    replace_lost_after_s: float,
) -> list[Instance]:
    """Create the stand-ins ``standins.assign`` gives ``host`` (at most ``free``), each
    fencing the lost instance it replaces (see ``standins``)."""
    fleets = {f.fleet_id: f for f in specs if f.profile_id is not None and host.name in f.hosts}
    if free <= 0 or not fleets:
        return []
    # Usually empty: one small read of the hosts table per sync.
    lost = dict(
        s.execute(
            select(Host.id, Host.name).where(Host.last_seen_at <= now - replace_lost_after_s)
        ).all()
    )
    if not lost:
        return []
    orphans = [
        standins.Orphan(i, f, lost[h])
        for i, f, h in s.execute(
            select(Instance.id, Instance.fleet_id, Instance.host_id).where(
                Instance.host_id.in_(list(lost)),
                Instance.fleet_id.in_(list(fleets)),
                fleet_member(),
                Instance.desired == "running",  # a draining one was on its way out
            )
        )
    ]
    if not orphans:
        return []
    listed: dict[str, set[int]] = {}
    for fleet_id, name in s.execute(
        select(FleetHost.fleet_id, FleetHost.host_name).where(FleetHost.fleet_id.in_(list(fleets)))
    ):
        listed.setdefault(name, set()).add(fleet_id)
    live = s.execute(
        select(Host.id, Host.name, Host.slots).where(
            Host.name.in_(list(listed)), Host.last_seen_at > now - LOST_AFTER_S
        )
    ).all()
    used = dict(
        s.execute(
            select(Instance.host_id, func.count(Instance.id))
            .where(Instance.host_id.in_([h.id for h in live]), Instance.desired != "stopped")
            .group_by(Instance.host_id)
        ).all()
    )
    rooms = [
        standins.Room(
            h.name,
            free if h.id == host.id else h.slots - used.get(h.id, 0),
            frozenset(listed[h.name]),
        )
        for h in live
    ]
    where = standins.assign(orphans, rooms)
    created = []
    for orphan in orphans:
        if where.get(orphan.instance_id) != host.name:
            continue
        # The fence, and the compare-and-set that makes this host the only one to replace it.
        fenced = rowcount(
            s.execute(
                update(Instance)
                .where(Instance.id == orphan.instance_id, Instance.desired != "stopped")
                .values(
                    desired="stopped",
                    notice_reason=f"host {orphan.host} lost: replaced on {host.name}",
                    notice_deadline=now,
                    updated_at=now,
                )
            )
        )
        if not fenced:
            continue
        spec = fleets[orphan.fleet_id]
        assert spec.profile_id is not None
        row = new_instance(s, orphan.fleet_id, spec.profile_id, host.id, now, orphan.instance_id)
        row.standin_for = orphan.host
        created.append(row)
        log.warning(
            "host %s silent for %.0f s: its instance %s of fleet %s stands in on %s",
            orphan.host,
            replace_lost_after_s,
            orphan.instance_id,
            orphan.fleet_id,
            host.name,
        )
    return created


def sync(
    s: Session,
    *,
    host_id: int,
    agent_uid: str,
    observed: Sequence[Mapping[str, Any]],
    staged: Sequence[str],
    now: float,
    heard_at: float | None = None,
    pacer: SyncPacer | None = None,
    replace_lost_after_s: float | None = None,
    since: float | None = None,
    memory: SyncMemory | None = None,
) -> dict[str, Any]:
    """Record what an agent observes, re-plan its host, return its desired state: whole,
    or the changes since ``since`` (the revision of the answer the agent last applied;
    ``desired.answer``). ``observed`` may be all of the host's instances or, when the
    agent gives ``since``, only those whose observation changed.

    ``heard_at``: when the request arrived (default ``now``). It is the host's heartbeat:
    a host is lost when it stops calling, not when the control plane is slow to answer.
    ``memory``: told when the host is next due for re-planning (``quiet``).

    Raises:
        NotFound: no such host. Conflict: another agent holds the host now.
        InvalidInput: a malformed observation.
    """
    host = get_host(s, host_id, agent_uid)
    revision = db_clock(s)  # before any read: what changes after it, the next sync sees
    host.last_seen_at = now if heard_at is None else heard_at
    staged_json = staged_list(staged)
    if host.staged != staged_json:
        host.staged = staged_json
    by_id: dict[int, Mapping[str, Any]] = {}
    for obs in observed:
        if not isinstance(obs, Mapping) or not isinstance(obs.get("id"), int):
            raise InvalidInput("each observed instance needs an integer id")
        by_id[obs["id"]] = obs
    owned = patchjob_storage.owned_fleet_ids(s)
    lean = (owned, since - quiet.MARGIN_S) if since is not None else None
    rows = _host_rows(s, host, by_id, lean)
    reported = [row for row in rows if row.id in by_id]
    open_by_instance = sessions.open_sessions(s, [row.id for row in reported])
    given: dict[int, int] = {}
    for row in reported:
        exited_before = row.exited_at
        _observe(row, by_id[row.id], now, partial(_profile_capacity, s, row.profile_id))
        if row.exited_at is not None and row.exited_at != exited_before:
            _report_exit(s, row, host, now)
        if n := sessions.track(row, by_id[row.id], now, open_by_instance.get(row.id, [])):
            given[row.id] = n
    counts = sessions.release(s, given)
    for row in reported:
        if row.id in counts:  # given back by an UPDATE the ORM did not see
            set_committed_value(row, "players", counts[row.id])
    live = [row for row in rows if _is_live(row)]
    if lean is None:
        taken = sum(i.desired != "stopped" for i in live if i.fleet_id in owned)
    else:
        s.flush()  # the observations above may have stopped some
        taken = _owned_taken(s, host, owned)
    created = _plan(s, host, live, now, replace_lost_after_s, owned=owned, taken=taken)
    live = [row for row in live if _is_live(row)] + created
    for row in live:
        if row.slot is None:  # a row from before slots
            assign_slot(s, row, launch.is_exclusive(s, row.profile_id)[1])
    if memory is not None:
        memory.planned(host.id, next_plan(live, now))
    return desired.answer(s, host, live, revision=revision, since=since, now=now, pacer=pacer)


def staged_list(staged: Sequence[str]) -> str:
    """The builds an agent has staged, as stored on its host (and compared by ``quiet``)."""
    return json.dumps(sorted(str(x)[:64] for x in staged)[:200])


def next_plan(rows: Sequence[Instance], now: float) -> float:
    """When the host of live instances ``rows`` is next due for re-planning: at the next
    drain or notice deadline among them, else ``quiet.PLAN_EVERY_S`` from now."""
    deadlines = [
        at
        for i in rows
        for at in (i.drain_deadline, i.notice_deadline)
        if at is not None and at > now
    ]
    return min([now + quiet.PLAN_EVERY_S, *deadlines])
