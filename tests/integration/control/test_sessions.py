"""Game sessions followed from what agents observe, against a real database (SQLite and
PostgreSQL): a stopped instance ends every session it held, a game's player list ends the
sessions whose players left, and a sync ends them and gives their places back with one
statement each, however many instances it covers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select, update

from changeover.control.db import Database, now
from changeover.control.fleet import allocate_db, sessions
from changeover.control.fleet.models import GameSession, Instance
from fleet_world import party_request, ready_instance, world


def test_a_sync_ends_sessions_and_gives_their_places_back_in_a_few_statements(
    db: Database,
) -> None:
    w = world(db)
    with db.write() as s:
        rows = [ready_instance(w, 7) for _ in range(3)]  # capacity 4 each
        s.add_all(rows)
        s.flush()
        stopped, playing, drifted = (r.id for r in rows)
    with db.write() as s:
        got = [allocate_db.allocate(s, party_request(n, size=2), now()) for n in range(6)]
    by_instance: dict[int, list[dict[str, Any]]] = {}
    for g in got:
        by_instance.setdefault(g["instance_id"], []).append(g)
    assert sorted(map(len, by_instance.values())) == [2, 2, 2]  # two parties of 2 each
    with db.write() as s:  # a count that drifted below what its sessions hold
        s.execute(update(Instance).where(Instance.id == drifted).values(players=1))
    stayed = by_instance[playing][0]["players"]
    everyone = [p for g in by_instance[playing] for p in g["players"]]
    with db.write() as s:  # both parties connect: no place given back
        row = s.get(Instance, playing)
        assert row is not None
        seen = {"state": "ready", "sdk": {"ready": True, "players": everyone}}
        assert sessions.track(row, seen, now(), sessions.open_sessions(s, [playing])[playing]) == 0
    observed = {
        stopped: {"state": "stopped"},
        playing: {"state": "ready", "sdk": {"ready": True, "players": stayed}},
        drifted: {"state": "failed"},
    }
    statements: list[str] = []

    def count(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()[:2]).upper())

    with db.write() as s:
        open_by = sessions.open_sessions(s, [stopped, playing, drifted])
        rows_by = {i.id: i for i in s.scalars(select(Instance))}
        given = {
            k: n
            for k, obs in observed.items()
            if (n := sessions.track(rows_by[k], obs, now(), open_by[k]))
        }
        assert given == {stopped: 4, playing: 2, drifted: 4}
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            counts = sessions.release(s, given)
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
    assert counts == {stopped: 0, playing: 2, drifted: 0}  # never below none
    # The ended sessions' flush, the places given back, their counts read: one each.
    assert statements == ["UPDATE SESSIONS", "UPDATE INSTANCES", "SELECT INSTANCES.ID,"]
    with db.read() as s:
        players = dict(s.execute(select(Instance.id, Instance.players)).all())
        status = {g.id: (g.instance_id, g.status) for g in s.scalars(select(GameSession))}
    assert players == counts
    for g in got:
        ended = g["instance_id"] != playing or g["players"] != stayed
        assert status[g["session_id"]] == (g["instance_id"], "ended" if ended else "connected")


def test_nothing_given_back_costs_no_statement(db: Database) -> None:
    statements: list[str] = []

    def count(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    with db.write() as s:
        s.execute(select(Instance.id)).all()  # the transaction has begun
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            assert sessions.release(s, {}) == {}
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
    assert statements == []
