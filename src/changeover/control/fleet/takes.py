"""Taking places on instances: the compare-and-set update and the session row, made at
once or held back and made together (``allocate_db.deferred_writes``).

A take is one update that only matches while the instance has room and still takes
players::

    UPDATE instances SET players = players + :n
    WHERE id = :id AND players + :n <= capacity AND desired = 'running' AND state = 'ready'

so no instance ever holds more players than its capacity, whatever else writes to it.

Held back, the takes of a block and its session rows go out as it ends, with its commit.
On PostgreSQL that is one round trip (a psycopg pipeline: the updates, the inserts and
``COMMIT`` sent together). The commit then goes out before the client has seen whether
each update matched its row, so there each take is written *guarded*: a statement that
fails, aborting the transaction and with it the ``COMMIT``, when its update matched none
(``_GUARDED_TAKE``). Measured under load, each round trip of the allocator's thread costs
it 0.5-2 ms (most of it waiting for the GIL and a CPU, not for the database), and the
pipeline saves two of them per batch (``BENCHMARKS.md``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
from sqlalchemy import (
    Dialect,
    Table,
    bindparam,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ClauseElement

from changeover.control.db import rowcount
from changeover.control.fleet.models import GameSession, Instance

_INSTANCES = cast(Table, Instance.__table__)
TAKE = {
    # By a friend's instance (a friend may join one that drains), or by any other.
    friend: update(_INSTANCES)
    .where(
        _INSTANCES.c.id == bindparam("instance_id"),
        _INSTANCES.c.players + bindparam("n") <= _INSTANCES.c.capacity,
        # Two comparisons, not ``IN``: an ``IN`` list is a parameter SQLAlchemy expands
        # as it executes, a step the driver-level SQL of ``write_and_commit`` skips.
        or_(_INSTANCES.c.desired == "running", _INSTANCES.c.desired == "draining")
        if friend
        else _INSTANCES.c.desired == "running",
        # What ``rank`` chose from may be a few milliseconds old (``allocate_db._Shared``):
        # an instance drained or gone down meanwhile is not taken, as it would not have
        # been chosen.
        _INSTANCES.c.state == "ready",
    )
    .values(players=_INSTANCES.c.players + bindparam("n"))
    for friend in (False, True)
}
INSERT_SESSION = insert(cast(Table, GameSession.__table__))


def _guarded(take: Any) -> ClauseElement:
    """``take`` as a statement that fails when it matches no row: a division by the count
    of rows it updated (SQL has no ``raise``; the error is turned into ``LostRace``)."""
    taken = take.returning(_INSTANCES.c.id).cte("taken")
    return select(literal_column("1") / func.count()).select_from(taken)


_GUARDED_TAKE = {friend: _guarded(take) for friend, take in TAKE.items()}


class LostRace(Exception):
    """A held-back take found its instance changed by another transaction (filled,
    drained): the block's transaction must be rolled back and run again without holding
    writes back, where each take is checked as it is made. Not a ``ChangeoverError``: no
    request is refused by it."""


@dataclass
class HeldWrites:
    """The writes of a block of ``allocate_db.deferred_writes``, not made yet."""

    takes: dict[bool, dict[int, int]] = field(default_factory=lambda: {False: {}, True: {}})
    """Places to take per instance, by ``TAKE``'s key (whether joining a friend): the
    takes of a batch mostly fall on the same one or two instances (the fullest first), and
    one compare-and-set for their sum is one new row version instead of one per take."""
    sessions: list[dict[str, Any]] = field(default_factory=list)

    def add_take(self, instance_id: int, n: int, friend: bool) -> None:
        takes = self.takes[friend]
        takes[instance_id] = takes.get(instance_id, 0) + n

    def drain_takes(self) -> list[tuple[bool, list[dict[str, int]]]]:
        """The takes held so far as ``TAKE``'s parameters, by its key; none held after."""
        # In instance order, as every such block locks its rows: two never deadlock.
        params = [
            (friend, [{"instance_id": i, "n": n} for i, n in sorted(takes.items())])
            for friend, takes in self.takes.items()
            if takes
        ]
        self.takes = {False: {}, True: {}}
        return params


def take_now(s: Session, instance_id: int, n: int, friend: bool) -> bool:
    """Take ``n`` places on the instance; False if it has no longer room for them."""
    return bool(rowcount(s.execute(TAKE[friend], {"instance_id": instance_id, "n": n})))


def write_takes(s: Session, held: HeldWrites) -> None:
    """Make the held-back takes (one round trip on PostgreSQL, however many), in the
    transaction; ``LostRace`` if any matched no row."""
    for friend, params in held.drain_takes():
        # An executemany: psycopg sends the updates in one pipeline, one round trip.
        made = rowcount(s.execute(TAKE[friend], params))
        if made != len(params):
            raise LostRace(f"{len(params) - made} of {len(params)} held-back takes lost")


def write_and_commit(s: Session, held: HeldWrites) -> None:
    """Make every held-back write and commit ``s``'s transaction; ``LostRace`` (nothing
    committed) if a take matched no row."""
    dialect = s.get_bind().dialect
    if dialect.name != "postgresql":
        write_takes(s, held)
        if held.sessions:
            s.execute(INSERT_SESSION, held.sessions)
        s.commit()
        return
    raw = s.connection().connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        # Behind SQLAlchemy's back but in its transaction, on its connection: the
        # session's own commit that follows finds nothing left to commit.
        with raw.pipeline(), raw.cursor() as cur:
            for friend, params in held.drain_takes():
                sql, fixed = _driver_sql(dialect, _GUARDED_TAKE[friend], ())
                cur.executemany(sql, [{**fixed, **p} for p in params])
            if held.sessions:
                sql, fixed = _driver_sql(dialect, INSERT_SESSION, tuple(held.sessions[0]))
                cur.executemany(sql, held.sessions)
            raw.commit()
    except psycopg.errors.DivisionByZero as e:
        raise LostRace("a held-back take lost its instance to another writer") from e
    held.sessions = []


@functools.lru_cache(maxsize=16)
def _driver_sql(
    dialect: Dialect, statement: ClauseElement, keys: Sequence[str]
) -> tuple[str, dict[str, Any]]:
    """``statement`` as the driver's SQL (``%(name)s`` parameters) and the values of the
    parameters it fixes itself (``desired = 'running'``)."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys) or None)
    fixed = {k: v for k, v in compiled.params.items() if v is not None}
    return str(compiled), fixed
