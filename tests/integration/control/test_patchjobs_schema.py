"""Migration 0003 builds exactly the tables the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from changeover.control import models  # noqa: F401  (registers every table)
from changeover.control.db import Base, Database


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_migrations_match_the_models(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if db == "postgres" else f"sqlite:///{tmp_path}/t.db"
    database = Database(url)
    try:
        database.migrate()
        with database.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
    finally:
        database.dispose()
