"""Seed ids registered for environments, applications, builds and fleets (``v3_ids``), on
SQLite and PostgreSQL (whose row ids are 32-bit, the seed's 64-bit)."""

from __future__ import annotations

import pytest

from changeover.control.db import Database
from changeover.control.fleet.models import Application, Environment
from changeover.control.patchjobs import v3_ids
from changeover.errors import Conflict, InvalidInput, NotFound

SEED_ID = "8939460394116420757"


def test_registered_ids_and_row_ids(db: Database) -> None:
    with db.write() as s:
        s.add_all(
            [Application(name="arena", created_at=0.0), Application(name="tool", created_at=0)]
        )
        s.add(Environment(name="prod", created_at=0.0))
    with db.write() as s:
        arena = v3_ids.register(s, "application", SEED_ID, "arena", 1.0)
        assert arena["id"] == SEED_ID and arena["name"] == "arena"
        with pytest.raises(Conflict):
            v3_ids.register(s, "application", SEED_ID, "tool", 1.0)
        with pytest.raises(InvalidInput):  # could be a row id
            v3_ids.register(s, "application", "12", "tool", 1.0)
        with pytest.raises(NotFound):
            v3_ids.register(s, "application", "9000000000", "nobody", 1.0)
        with pytest.raises(InvalidInput):
            v3_ids.register(s, "planet", "9000000000", "arena", 1.0)
    with db.read() as s:
        local = int(str(arena["local_id"]))
        assert v3_ids.resolve(s, "application", SEED_ID, "applicationId") == local
        assert v3_ids.resolve(s, "application", str(local), "applicationId") == local
        env = v3_ids.resolve(s, "deploymentEnvironment", "1", "deploymentEnvironmentId")
        assert v3_ids.public_ids(s, "application", [local]) == {local: SEED_ID}
        assert v3_ids.public_ids(s, "deploymentEnvironment", [env]) == {env: str(env)}
        for bad in ("9223372036854775808", "x1", ""):
            with pytest.raises(InvalidInput) as e:
                v3_ids.resolve(s, "application", bad, "applicationId")
            assert e.value.facts["field"] == "applicationId"
        with pytest.raises(NotFound):
            v3_ids.resolve(s, "application", "9000000000", "applicationId")
    with db.write() as s:  # a new id replaces the old one
        v3_ids.register(s, "application", "9000000000", "arena", 2.0)
        assert [r["id"] for r in v3_ids.listing(s)] == ["9000000000"]
