"""One game-server instance as the SDK sees it, and the rules its inputs obey.

Pure: no I/O, no threads. The SDK server keeps one ``InstanceSDKState`` per registered
instance and mutates it only through these methods, so every value a game process can
send is validated in one place. Time comes from an injected clock so tests never sleep.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from changeover.errors import Conflict, InvalidInput

Clock = Callable[[], float]

MAX_PLAYER_ID_CHARS = 128
MAX_LABELS = 64
MAX_LABEL_VALUE_CHARS = 256
MAX_REASON_CHARS = 256
MAX_PLAYER_CAPACITY = 100_000
LABEL_KEY_RE = re.compile(r"[a-z0-9_.-]{1,63}")


def check_player_id(player_id: object) -> str:
    """Return ``player_id`` if it is a non-empty printable string of at most 128 chars."""
    if not isinstance(player_id, str):
        raise InvalidInput(f"player_id must be a string, got {type(player_id).__name__}")
    if not player_id:
        raise InvalidInput("player_id must not be empty")
    if len(player_id) > MAX_PLAYER_ID_CHARS:
        raise InvalidInput(
            f"player_id is {len(player_id)} characters long; the limit is {MAX_PLAYER_ID_CHARS}",
            limit=MAX_PLAYER_ID_CHARS,
        )
    if not player_id.isprintable():
        raise InvalidInput(f"player_id {player_id!r} contains non-printable characters")
    return player_id


def check_labels(labels: Mapping[Any, Any], what: str = "label") -> dict[str, str]:
    """Return a copy of ``labels`` if every key and value is acceptable.

    Keys match ``[a-z0-9_.-]{1,63}`` (safe in URLs, metrics and file names alike); values
    are printable strings of at most 256 characters. Annotations obey the same rules.
    """
    checked: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_KEY_RE.fullmatch(key):
            raise InvalidInput(
                f"{what} key {str(key)[:80]!r} must match [a-z0-9_.-]{{1,63}}", key=str(key)[:80]
            )
        if not isinstance(value, str):
            raise InvalidInput(f"{what} {key!r} must have a string value", key=key)
        if len(value) > MAX_LABEL_VALUE_CHARS:
            raise InvalidInput(
                f"{what} {key!r} value is {len(value)} characters long; "
                f"the limit is {MAX_LABEL_VALUE_CHARS}",
                key=key,
                limit=MAX_LABEL_VALUE_CHARS,
            )
        if not value.isprintable():
            raise InvalidInput(f"{what} {key!r} value contains non-printable characters", key=key)
        checked[key] = value
    return checked


def _merge(current: dict[str, str], more: Mapping[Any, Any], what: str) -> dict[str, str]:
    merged = {**current, **check_labels(more, what)}
    if len(merged) > MAX_LABELS:
        raise InvalidInput(
            f"an instance may have at most {MAX_LABELS} {what}s; this would make {len(merged)}",
            limit=MAX_LABELS,
        )
    return merged


@dataclass(frozen=True)
class ShutdownNotice:
    """The agent's announcement that this instance will be stopped.

    ``deadline`` is a unix timestamp: after it the instance is stopped whatever its players
    are doing, so the game should save before it.
    """

    reason: str
    deadline: float

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise InvalidInput("shutdown reason must be a non-empty string")
        if len(self.reason) > MAX_REASON_CHARS or not self.reason.isprintable():
            raise InvalidInput(
                f"shutdown reason must be printable and at most {MAX_REASON_CHARS} characters"
            )
        # bool is an int; a deadline of True is a bug, not a timestamp.
        if isinstance(self.deadline, bool) or not isinstance(self.deadline, int | float):
            raise InvalidInput("shutdown deadline must be a unix timestamp (a number)")
        if not math.isfinite(self.deadline):
            raise InvalidInput("shutdown deadline must be a finite unix timestamp")

    def seconds_left(self, now: float) -> float:
        """Seconds from ``now`` until the deadline; negative once it has passed."""
        return self.deadline - now

    def to_dict(self) -> dict[str, object]:
        return {"reason": self.reason, "deadline": self.deadline}

    @classmethod
    def from_dict(cls, data: object) -> ShutdownNotice:
        """Parse the ``{"reason", "deadline"}`` object of the wire protocol."""
        if not isinstance(data, Mapping):
            raise InvalidInput("a shutdown notice must be an object with reason and deadline")
        reason, deadline = data.get("reason"), data.get("deadline")
        if not isinstance(reason, str):
            raise InvalidInput("shutdown reason must be a non-empty string")
        if isinstance(deadline, bool) or not isinstance(deadline, int | float):
            raise InvalidInput("shutdown deadline must be a unix timestamp (a number)")
        return cls(reason=reason, deadline=float(deadline))


@dataclass
class InstanceSDKState:
    """What one instance has told the SDK, plus the shutdown notice the agent gave it.

    Every mutator validates first and changes nothing on bad input. Repeating a call
    (connecting a connected player, disconnecting an absent one) is harmless, because
    games retry over HTTP.

    What the game asks of its allocation (Agones' lifecycle, which the Changeover SDK's
    own calls leave alone): ``allocated`` (in a match: no new players are placed here),
    ``reserved`` (the same for a while: until ``reserved_until``, or until ready/allocate
    when that is None), ``player_capacity`` (fewer places than the profile gives; None:
    the profile's), and ``shutdown_requested`` (the game wants to be stopped). ``ready``
    ends an allocation or a reservation, as in Agones.
    """

    instance_id: str
    clock: Clock = field(repr=False, compare=False)
    ready: bool = False
    ready_at: float | None = None
    last_heartbeat: float | None = None
    heartbeat_stream: bool = False
    """The last heartbeat came on Agones' gRPC ``Health`` stream (``stream_heartbeat``),
    which an Agones SDK opens once: it breaks with the agent, and the game never reopens it."""
    players: set[str] = field(default_factory=set)
    labels: dict[str, str] = field(default_factory=dict)
    shutdown: ShutdownNotice | None = None
    shutdown_notified_at: float | None = None
    state_saved: bool = False
    state_saved_at: float | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    allocated: bool = False
    reserved: bool = False
    reserved_until: float | None = None
    player_capacity: int | None = None
    shutdown_requested: bool = False
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    """Agones' counters the game changed (``{"count", "capacity"}``); the others are as its
    profile declares them (``changeover.agones.counts``)."""
    lists: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Agones' lists the game changed (``{"capacity", "values"}``), likewise."""

    def mark_ready(self) -> None:
        if not self.ready:
            self.ready = True
            self.ready_at = self.clock()
        self.allocated = self.reserved = False
        self.reserved_until = None
        # Ready implies alive: count it as a heartbeat so health starts fresh.
        self.last_heartbeat = self.clock()

    def heartbeat(self) -> None:
        self.last_heartbeat = self.clock()
        self.heartbeat_stream = False

    def stream_heartbeat(self) -> None:
        self.last_heartbeat = self.clock()
        self.heartbeat_stream = True

    def seconds_since_heartbeat(self) -> float | None:
        """None until the first heartbeat (or ready)."""
        if self.last_heartbeat is None:
            return None
        return self.clock() - self.last_heartbeat

    def connect_player(self, player_id: object, limit: int | None = None) -> bool:
        """Record a player; True if it was not connected already.

        Raises:
            InvalidInput: a malformed player id.
            Conflict: ``limit`` players are connected already (Agones' player capacity).
        """
        pid = check_player_id(player_id)
        if pid in self.players:
            return False
        if limit is not None and len(self.players) >= limit:
            raise Conflict("players are already at capacity", limit=limit)
        self.players.add(pid)
        return True

    def disconnect_player(self, player_id: object) -> bool:
        """Forget a player; True if it was connected."""
        pid = check_player_id(player_id)
        if pid not in self.players:
            return False
        self.players.discard(pid)
        return True

    def set_labels(self, labels: Mapping[Any, Any]) -> None:
        """Add or overwrite the given labels; labels not named are kept."""
        self.labels = _merge(self.labels, labels, "label")

    def set_annotations(self, annotations: Mapping[Any, Any]) -> None:
        """Add or overwrite annotations (the same rules as labels)."""
        self.annotations = _merge(self.annotations, annotations, "annotation")

    def allocate(self) -> None:
        """The game is in use (Agones' self-allocation): no new players are placed here."""
        self.allocated = True
        self.reserved, self.reserved_until = False, None

    def reserve(self, seconds: object) -> None:
        """Take no new players for ``seconds`` (0: until ready or allocate).

        Raises:
            InvalidInput: ``seconds`` is not a whole number of seconds, or is negative.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise InvalidInput("a reservation lasts a whole number of seconds")
        if seconds < 0:
            raise InvalidInput(
                f"a reservation cannot last a negative time ({seconds} s)", seconds=seconds
            )
        self.reserved, self.allocated = True, False
        self.reserved_until = self.clock() + seconds if seconds else None

    def end_reservation(self) -> bool:
        """End a reservation whose time is up; True if one ended (Agones: back to Ready)."""
        if not self.reserved or self.reserved_until is None:
            return False
        if self.clock() < self.reserved_until:
            return False
        self.reserved, self.reserved_until = False, None
        return True

    def set_player_capacity(self, capacity: object) -> None:
        """Take at most ``capacity`` players (fewer than the profile's places, or more).

        Raises:
            InvalidInput: not a whole number from 0 to 100000.
        """
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise InvalidInput("a player capacity is a whole number")
        if not 0 <= capacity <= MAX_PLAYER_CAPACITY:
            raise InvalidInput(
                f"a player capacity is from 0 to {MAX_PLAYER_CAPACITY}, got {capacity}",
                limit=MAX_PLAYER_CAPACITY,
            )
        self.player_capacity = capacity

    def request_shutdown(self) -> None:
        """The game asks to be stopped (Agones' Shutdown); its agent stops it."""
        self.shutdown_requested = True

    def notify_shutdown(self, reason: str, deadline: float) -> bool:
        """Record a shutdown notice; True if it differs from the current one.

        A different notice (a new reason or deadline) asks for a new save, so it clears
        ``state_saved``; repeating the same notice changes nothing.
        """
        notice = ShutdownNotice(reason=reason, deadline=deadline)
        if notice == self.shutdown:
            return False
        self.shutdown = notice
        self.shutdown_notified_at = self.clock()
        self.state_saved = False
        return True

    def mark_state_saved(self) -> None:
        """The game has saved its state. Allowed before any notice, for games that save
        ahead of time; it then acknowledges nothing until a notice arrives and clears it."""
        self.state_saved = True
        self.state_saved_at = self.clock()

    def snapshot(self) -> InstanceSDKState:
        """An independent copy, safe to hand to another thread."""
        return dataclasses.replace(
            self,
            players=set(self.players),
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            counters={k: dict(v) for k, v in self.counters.items()},
            lists={k: {**v, "values": list(v["values"])} for k, v in self.lists.items()},
        )

    def to_dict(self) -> dict[str, object]:
        """The JSON shape of ``GET /state``."""
        return {
            "instance_id": self.instance_id,
            "ready": self.ready,
            "ready_at": self.ready_at,
            "last_heartbeat": self.last_heartbeat,
            "heartbeat_stream": self.heartbeat_stream,
            "players": sorted(self.players),
            "labels": dict(sorted(self.labels.items())),
            "shutdown": self.shutdown.to_dict() if self.shutdown else None,
            "shutdown_notified_at": self.shutdown_notified_at,
            "state_saved": self.state_saved,
            "state_saved_at": self.state_saved_at,
            "annotations": dict(sorted(self.annotations.items())),
            "allocated": self.allocated,
            "reserved": self.reserved,
            "reserved_until": self.reserved_until,
            "player_capacity": self.player_capacity,
            "shutdown_requested": self.shutdown_requested,
            "counters": {k: dict(v) for k, v in sorted(self.counters.items())},
            "lists": {k: {**v, "values": list(v["values"])} for k, v in sorted(self.lists.items())},
        }
