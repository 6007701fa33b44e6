"""Held-back takes (``fleet/takes.py``): made with the block's commit, on both databases,
and undone whole when another writer got to an instance first."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import select, update

from changeover.control.db import Database, now
from changeover.control.fleet import allocate_db, takes
from changeover.control.fleet.models import GameSession, Instance
from fleet_world import ready_instance, world


def _request(name: str, join: str | None = None) -> allocate_db.AllocationRequest:
    return allocate_db.AllocationRequest("f", None, (), None, (name,), join_session=join)


def _one_player_on_one_instance(db: Database) -> tuple[Instance, dict[str, Any]]:
    w = world(db)
    with db.write() as s:
        row = ready_instance(w)
        s.add(row)
    with db.write() as s:
        first = allocate_db.allocate(s, _request("a"), now())
    return row, first


def _players(db: Database) -> dict[int, int]:
    with db.read() as s:
        return dict(s.execute(select(Instance.id, Instance.players)).all())


def test_held_back_takes_of_one_instance_are_one_compare_and_set_in_id_order() -> None:
    held = takes.HeldWrites()
    for instance_id, n, friend in [(9, 1, False), (3, 2, False), (9, 2, False), (5, 1, True)]:
        held.add_take(instance_id, n, friend)
    assert held.drain_takes() == [
        (False, [{"instance_id": 3, "n": 2}, {"instance_id": 9, "n": 3}]),
        (True, [{"instance_id": 5, "n": 1}]),
    ]
    assert held.drain_takes() == []  # written once, not again at the block's end


def test_the_block_commits_its_writes_as_it_ends(db: Database) -> None:
    w = world(db)
    with db.write() as s:
        s.add(ready_instance(w))
    with db.write() as s:
        with allocate_db.deferred_writes(s):
            got = [allocate_db.allocate(s, _request(f"p{n}"), now()) for n in range(3)]
        # Committed already: another connection sees the places and the sessions.
        assert list(_players(db).values()) == [3]
        with db.read() as other:
            ids = set(other.scalars(select(GameSession.id)))
        assert ids == {g["session_id"] for g in got}


def test_a_friend_joins_a_draining_instance_within_a_block(db: Database) -> None:
    row, first = _one_player_on_one_instance(db)
    with db.write() as s:  # a patch job drains it
        s.execute(update(Instance).values(desired="draining"))
    with db.write() as s, allocate_db.deferred_writes(s):
        friend = allocate_db.allocate(s, _request("b", join=first["session_id"]), now())
    assert friend["instance_id"] == row.id and friend["joined_friend"]
    assert _players(db) == {row.id: 2}


@pytest.mark.parametrize("friend", [False, True])
def test_a_take_lost_to_another_writer_commits_nothing(db: Database, friend: bool) -> None:
    """The guard of a held-back take: on PostgreSQL the take and the ``COMMIT`` go out
    together, so a take that matches no row must stop the ``COMMIT`` itself."""
    row, first = _one_player_on_one_instance(db)
    request = _request("b", join=first["session_id"] if friend else None)

    def batch() -> None:
        with db.write() as s, allocate_db.deferred_writes(s):
            allocate_db.allocate(s, dataclasses.replace(request), now())
            # Meanwhile the instance stops taking players (its host went down).
            s.execute(update(Instance).values(state="stopping"))

    with pytest.raises(takes.LostRace):
        batch()
    assert _players(db) == {row.id: 1}
    with db.read() as s:
        assert list(s.scalars(select(GameSession.id))) == [first["session_id"]]
        assert s.scalar(select(Instance.state)) == "ready"  # the other write undone too
