"""Desired state, the rules: which instances each host should run, and how a switch moves on.

Pure functions of plain values that return actions; ``control.fleet.hosts`` applies
``plan_host`` whenever a host's agent syncs, and ``control.fleet.tasks`` applies
``switch_step`` for a profile switch. Both are idempotent: asked again with the state their
last actions produced, they ask for nothing more.

``plan_host`` keeps, on one host, for each fleet that lists it, ``instances_per_host``
instances that are meant to run:

- too few (and the host is alive, with free slots): create instances of the active profile;
- too many: stop idle ones (other profiles first, then the newest), drain busy ones;
- a host no longer in the fleet: stop its idle instances, drain its busy ones;
- a draining instance stops once its last player leaves, is told to save ``notice_s``
  before its drain deadline, and is stopped at the deadline.

A new instance that replaces an old one during a switch counts once with it, so a switch's
surge of one is not mistaken for an extra instance.

``switch_step`` replaces a fleet's instances of other profiles one at a time: start the
replacement on the same host, wait until it is ready, then stop the old one if idle or
drain it if players are on it (never stop a server with players before its deadline).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

RUNNING = "running"
DRAINING = "draining"
STOPPED = "stopped"
DRAIN_S = 12 * 3600.0
"""How long an instance with players may drain before it is stopped (seed 002: ~12 h)."""
NOTICE_S = 60.0
"""How long before a drain deadline the instance gets its shutdown notice."""


@dataclass(frozen=True)
class FleetSpec:
    fleet_id: int
    profile_id: int | None
    """The active profile; None means run nothing."""
    per_host: int
    hosts: frozenset[str]


@dataclass(frozen=True)
class HostView:
    name: str
    alive: bool
    slots: int


@dataclass(frozen=True)
class InstanceView:
    instance_id: int
    fleet_id: int
    profile_id: int
    host: str
    desired: str
    state: str
    players: int = 0
    replaces_id: int | None = None
    drain_deadline: float | None = None
    drain_reason: str | None = None
    notice_deadline: float | None = None
    """Set once a shutdown notice was given."""
    created_at: float = 0.0
    error: str | None = None
    standin_for: str | None = None
    """The lost host it stands in for (``standins``): not counted toward its own host's
    target, retired once that host is alive again."""


# -- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Create:
    fleet_id: int
    profile_id: int
    host: str
    replaces_id: int | None = None


@dataclass(frozen=True)
class Drain:
    """No new players; stop when empty or at ``deadline``."""

    instance_id: int
    reason: str
    deadline: float


@dataclass(frozen=True)
class Notify:
    """Give the instance its shutdown notice now (its players may save and move)."""

    instance_id: int
    reason: str
    deadline: float


@dataclass(frozen=True)
class Stop:
    """Stop the instance: notice with ``deadline``, wait for its save, then the stop signal."""

    instance_id: int
    reason: str
    deadline: float


Action = Create | Drain | Notify | Stop


def _retire(i: InstanceView, reason: str, now: float, drain_s: float) -> Action:
    if i.players > 0:
        return Drain(i.instance_id, reason, now + drain_s)
    return Stop(i.instance_id, reason, now)


def _counted(running: Sequence[InstanceView]) -> list[InstanceView]:
    """The running instances that count toward the target: an old instance being
    replaced does not (its replacement does), nor a stand-in for a lost host's."""
    replaced = {i.replaces_id for i in running if i.replaces_id is not None}
    return [i for i in running if i.instance_id not in replaced and i.standin_for is None]


def _drains(instances: Iterable[InstanceView], now: float, notice_s: float) -> list[Action]:
    out: list[Action] = []
    for i in instances:
        if i.desired != DRAINING:
            continue
        reason = i.drain_reason or "server shutting down"
        if i.players <= 0:
            out.append(Stop(i.instance_id, f"{reason} (last player left)", now))
        elif i.drain_deadline is not None and now >= i.drain_deadline:
            out.append(Stop(i.instance_id, f"{reason} (drain deadline passed)", now))
        elif (
            i.drain_deadline is not None
            and i.notice_deadline is None
            and now >= i.drain_deadline - notice_s
        ):
            out.append(Notify(i.instance_id, reason, i.drain_deadline))
    return out


def plan_host(
    host: HostView,
    fleets: Iterable[FleetSpec],
    instances: Sequence[InstanceView],
    now: float,
    *,
    drain_s: float,
    notice_s: float,
    alive_hosts: frozenset[str] = frozenset(),
) -> list[Action]:
    """What should change on ``host``, given the fleets and this host's instances;
    ``alive_hosts``: which of the hosts its stand-ins stand in for are alive again."""
    actions: list[Action] = _drains(instances, now, notice_s)
    occupied = sum(1 for i in instances if i.desired != STOPPED)
    for fleet in sorted(fleets, key=lambda f: f.fleet_id):
        running = [i for i in instances if i.fleet_id == fleet.fleet_id and i.desired == RUNNING]
        if host.name not in fleet.hosts or fleet.profile_id is None:
            why = "host removed from the fleet" if host.name not in fleet.hosts else "no profile"
            actions.extend(_retire(i, why, now, drain_s) for i in running)
            continue
        for i in running:
            if i.standin_for is not None and i.standin_for in alive_hosts:
                actions.append(_retire(i, f"host {i.standin_for} is back", now, drain_s))
        counted = _counted(running)
        short = fleet.per_host - len(counted)
        if short > 0 and host.alive:
            for _ in range(min(short, host.slots - occupied)):
                actions.append(Create(fleet.fleet_id, fleet.profile_id, host.name))
                occupied += 1
        elif short < 0:
            # A replacement is spare once the instance it replaced has stopped running: after
            # a switch every instance is one, and a fleet scaled down must find them.
            running_ids = {i.instance_id for i in running}
            in_switch = {i.replaces_id for i in running if i.replaces_id is not None}
            spare = [
                i
                for i in counted
                if i.replaces_id not in running_ids and i.instance_id not in in_switch
            ]
            # Idle before busy, other profiles before the active one, newest first.
            spare.sort(
                key=lambda i: (i.players > 0, i.profile_id == fleet.profile_id, -i.instance_id)
            )
            actions.extend(_retire(i, "scaled down", now, drain_s) for i in spare[:-short])
    return actions


# -- state slots ---------------------------------------------------------------------------


def pick_slot(
    held: Iterable[int],
    predecessor_slot: int | None,
    predecessor_stopping: bool,
    exclusive: bool,
) -> int:
    """The state slot of a new instance of a fleet on a host (``runspec.STATE_MODES``).

    ``held``: the slots of the fleet's other live instances on the host. A replacement
    takes its predecessor's slot (on the same host) when the state must pass on
    (``exclusive``) or when the predecessor is being stopped anyway; the agent starts it
    once the predecessor's process has ended. Otherwise (a new instance, or one that runs
    beside its predecessor) it takes the lowest slot no live instance holds, whose
    directory keeps what the last instance there left.
    """
    if predecessor_slot is not None and (exclusive or predecessor_stopping):
        return predecessor_slot
    taken = set(held)
    slot = 0
    while slot in taken:
        slot += 1
    return slot


# -- profile switch ------------------------------------------------------------------------


@dataclass(frozen=True)
class Wait:
    message: str


@dataclass(frozen=True)
class StartReplacement:
    replaces_id: int
    host: str


@dataclass(frozen=True)
class Retire:
    instance_id: int
    busy: bool
    """True: players are on it, so drain instead of stop."""


@dataclass(frozen=True)
class Fail:
    message: str
    stop_instance_id: int | None


@dataclass(frozen=True)
class Done:
    message: str


Step = Wait | StartReplacement | Retire | Fail | Done


def switch_step(
    instances: Sequence[InstanceView],
    hosts: Mapping[str, HostView],
    fleet_hosts: frozenset[str],
    to_profile_id: int,
    now: float,
    *,
    healthy_deadline_s: float,
) -> Step:
    """The next step of a rolling switch of one fleet to ``to_profile_id``."""
    old = {
        i.instance_id: i
        for i in instances
        if i.desired == RUNNING and i.profile_id != to_profile_id
    }
    if not old:
        return Done("every instance runs the new profile")
    for new in instances:
        if new.desired != RUNNING or new.replaces_id not in old:
            continue
        if new.state == "ready":
            replaced = old[new.replaces_id]
            return Retire(replaced.instance_id, busy=replaced.players > 0)
        if new.state == "failed" or now - new.created_at > healthy_deadline_s:
            why = new.error or f"not ready after {healthy_deadline_s:g} s (state {new.state})"
            return Fail(
                f"replacement instance {new.instance_id} on {new.host} failed: {why}",
                new.instance_id,
            )
        return Wait(f"waiting for instance {new.instance_id} on {new.host} to become ready")
    movable = [
        i
        for i in old.values()
        if i.host in fleet_hosts and (h := hosts.get(i.host)) is not None and h.alive
    ]
    if not movable:
        away = sorted({i.host for i in old.values()})
        return Wait(f"waiting for host(s) {', '.join(away)} to come back")
    pick = min(movable, key=lambda i: (i.players > 0, i.players, i.instance_id))
    return StartReplacement(pick.instance_id, pick.host)
