"""``db.among``: the rows whose column is in a list, as ``IN`` on SQLite and as one array
parameter on PostgreSQL (a statement whose text does not grow with the list)."""

from __future__ import annotations

from sqlalchemy import select

from changeover.control.db import Database, among
from changeover.control.fleet.models import Host
from fleet_world import statements, world


def test_among_finds_the_listed_rows_whatever_the_lists_length(db: Database) -> None:
    w = world(db, hosts=5)
    ids = sorted(w["hosts"])
    with statements(db, "FROM hosts") as sent, db.read() as s:
        found = [
            sorted(s.scalars(select(Host.id).where(among(s, Host.id, wanted))))
            for wanted in (ids[:1], ids[1:4], [*ids, 10**9], [])
        ]
    assert found == [ids[:1], ids[1:4], ids, []]
    if db.engine.dialect.name == "postgresql":
        # One statement text for every length (psycopg parses and caches it once).
        assert len(set(sent)) == 1 and "ANY" in sent[0]
