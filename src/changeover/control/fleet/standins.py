"""Stand-ins: a fleet keeps its size while one of its machines is down.

When a host stays silent for ``Settings.replace_lost_after_s`` (well past the
``LOST_AFTER_S`` after which it only stops being offered to players), every instance it
was meant to run for a fleet gets a stand-in: a new instance of the fleet's active profile
on another live host the fleet lists, with a free slot. ``assign`` says where, as a pure
rule; ``control.fleet.hosts`` applies it when a host syncs, for the stand-ins assigned to
that host.

- **Fenced.** The lost instance is marked stopped in the transaction that creates its
  stand-in, by a compare-and-set (two hosts syncing at once cannot both replace it). When
  its host comes back, the first answer its agent gets stops it; it was not offered to
  players meanwhile (its host was lost), so the two never both take players.
- **Temporary.** A stand-in does not count toward its own host's ``instances_per_host``.
  Once the host it stands in for is alive again, and so runs its own instances again, the
  stand-in retires (``placement.plan_host``): stopped if idle, drained if players are on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Orphan:
    """A live instance of a host lost past the deadline, in a fleet placement runs."""

    instance_id: int
    fleet_id: int
    host: str


@dataclass(frozen=True)
class Room:
    """A live host: its free slots and the fleets that list it."""

    host: str
    free: int
    fleets: frozenset[int]


def assign(orphans: Iterable[Orphan], rooms: Sequence[Room]) -> dict[int, str]:
    """Where each orphan's stand-in goes (orphan instance id -> host).

    Orphans in id order; each to a live host its fleet lists, other than its own, with a
    free slot: the one with the most free slots (then by name), so stand-ins spread
    rather than pile up. An orphan with no room anywhere gets none, until there is room.
    """
    free = {r.host: r.free for r in rooms}
    out: dict[int, str] = {}
    for orphan in sorted(orphans, key=lambda o: o.instance_id):
        candidates = [
            r.host
            for r in rooms
            if orphan.fleet_id in r.fleets and r.host != orphan.host and free[r.host] > 0
        ]
        if not candidates:
            continue
        best = min(candidates, key=lambda h: (-free[h], h))
        out[orphan.instance_id] = best
        free[best] -= 1
    return out


__all__ = ["Orphan", "Room", "assign"]
