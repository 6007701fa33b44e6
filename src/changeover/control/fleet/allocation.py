"""Server Allocate, the rules: which instance a player (or party) should join, or why none.

Pure: ``rank`` takes the candidate instances and a request and returns them best first, or
a ``Refusal`` that names the reason. ``control.fleet.allocate_db`` applies the choice with a
compare-and-set on the instance's player count, retrying down this list on a lost race.

The rules, in order (seed 002's bleed-off, seed 000's allocate-by-profile):

1. Only instances that are ready on a live host, with room for the whole party, and whose
   image version accepts the client's version. A version declares the client versions it
   accepts (``client_min`` .. ``client_max``); a client newer than ``client_max`` is a
   client from the future and never lands on that (old) server.
2. Never an instance being drained or stopped, unless the player joins a friend there.
3. Joining a friend goes to the friend's instance when that is allowed; otherwise the
   player is allocated as if alone, and the choice says why the friend could not be joined.
4. Only the regions the request lists, in its order (no list: every region alike).
5. Allocation weights (a patch job's ``SwitchAllocation``, per fleet and profile): an
   instance whose profile has weight 0 takes no new players (a friend may still join
   there, rule 3); among the others the highest weight first. Deterministic on purpose
   (no weighted random): a job moving weight to a new build sends every new player there
   at once, and a test or an operator can predict where a player lands. No weights: every
   instance weighs 1, as before.
6. The newest version first; among equals the fullest instance with room, so older and
   emptier instances drain naturally (pack, don't spread); then the oldest instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from changeover.content import client_versions

ALLOCATABLE: Final = frozenset({"ready"})
FRIEND_JOINABLE_DESIRED: Final = frozenset({"running", "draining"})
ClientVersion = client_versions.ClientVersion


def parse_client_version(value: str, what: str = "client version") -> ClientVersion:
    """``"1.4.2"`` as ``(1, 4, 2)``; trailing zeros do not matter (``1.4 == 1.4.0``).

    Raises:
        InvalidInput: not one to four dot-separated numbers.
    """
    return client_versions.parse(value, what)


@dataclass(frozen=True)
class Candidate:
    """One instance as the allocator sees it."""

    instance_id: int
    region: str
    version: int
    """The image version number: higher is newer."""
    state: str
    """Observed: staging, starting, ready, stopping, stopped, failed."""
    desired: str
    """running, draining or stopped."""
    players: int
    """Players allocated to it (open sessions), the number the capacity bounds."""
    capacity: int
    host_alive: bool = True
    client_min: ClientVersion | None = None
    client_max: ClientVersion | None = None
    weight: float = 1.0
    """Its profile's allocation weight in its fleet (rule 5); 0 = no new players."""

    @property
    def room(self) -> int:
        return self.capacity - self.players

    def accepts(self, client: ClientVersion | None) -> bool:
        return accepts_client(client, self.client_min, self.client_max)


def accepts_client(
    client: ClientVersion | None, client_min: ClientVersion | None, client_max: ClientVersion | None
) -> bool:
    """Whether a version accepting ``client_min`` .. ``client_max`` takes ``client``."""
    return client_versions.accepts(client, client_min, client_max)


@dataclass(frozen=True)
class Request:
    regions: tuple[str, ...] = ()
    """Preferred regions, best first; empty means any."""
    client_version: ClientVersion | None = None
    size: int = 1
    """Players in the party; all of them need room on one instance."""
    friend_instance_id: int | None = None
    spread: bool = False
    """Among equals the emptiest instance first instead of the fullest. Server Allocate
    always packs; the rollout simulator's benchmark measures what packing buys against
    this (``bench/rollout_sim.py``)."""


@dataclass(frozen=True)
class Ranked:
    """Candidates best first; ``friend_note`` says why a friend's instance was not used."""

    candidates: tuple[Candidate, ...]
    friend: bool = False
    friend_note: str | None = None


@dataclass(frozen=True)
class Refusal:
    reason: str
    """no_instance, no_capacity, client_update_required or client_too_new."""
    message: str


def _friend(candidates: Sequence[Candidate], request: Request) -> tuple[Candidate | None, str]:
    friend = next((c for c in candidates if c.instance_id == request.friend_instance_id), None)
    if friend is None:
        return None, "the friend's instance is not in this fleet or profile"
    if not friend.host_alive:
        return None, "the friend's host is not reachable"
    if friend.state not in ALLOCATABLE or friend.desired not in FRIEND_JOINABLE_DESIRED:
        return None, f"the friend's instance is {friend.desired}/{friend.state}"
    if not friend.accepts(request.client_version):
        return None, "the friend's server does not accept this client version"
    if friend.room < request.size:
        return None, "the friend's instance is full"
    return friend, ""


def _sort_key(
    c: Candidate, region_rank: dict[str, int], spread: bool
) -> tuple[int, float, int, int, int]:
    return (
        region_rank.get(c.region, len(region_rank)),
        -c.weight,
        -c.version,
        c.players if spread else -c.players,
        c.instance_id,
    )


def rank(candidates: Iterable[Candidate], request: Request) -> Ranked | Refusal:
    """The instances this request may join, best first, or why there is none."""
    pool = list(candidates)
    note = None
    if request.friend_instance_id is not None:
        friend, note = _friend(pool, request)
        if friend is not None:
            return Ranked((friend,), friend=True)
    if request.regions:
        pool = [c for c in pool if c.region in request.regions]
    where = f" in {', '.join(request.regions)}" if request.regions else ""
    ready = [
        c
        for c in pool
        if c.host_alive and c.state in ALLOCATABLE and c.desired == "running" and c.weight > 0
    ]
    if not ready:
        return Refusal("no_instance", f"no ready instance{where}; try again shortly")
    compatible = [c for c in ready if c.accepts(request.client_version)]
    if not compatible:
        client = request.client_version or ()
        if any(c.client_min is not None and client < c.client_min for c in ready):
            return Refusal(
                "client_update_required",
                "this client version is too old for every server; update the client",
            )
        return Refusal(
            "client_too_new",
            "no server accepts this client version yet (a client from the future);"
            " try again after the servers are updated",
        )
    roomy = [c for c in compatible if c.room >= request.size]
    if not roomy:
        return Refusal(
            "no_capacity",
            f"every compatible instance{where} is full"
            f" (a party of {request.size} needs that many free places)",
        )
    region_rank = {r: i for i, r in enumerate(request.regions)}
    roomy.sort(key=lambda c: _sort_key(c, region_rank, request.spread))
    return Ranked(tuple(roomy), friend_note=note)
