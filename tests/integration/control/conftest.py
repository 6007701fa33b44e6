"""A migrated database of each kind, for the tests that call the control plane's services
directly (no HTTP server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from changeover.control.db import Database


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = (
        request.getfixturevalue("pg_url")
        if request.param == "postgres"
        else f"sqlite:///{tmp_path}/t.db"
    )
    database = Database(url)
    database.migrate()
    try:
        yield database
    finally:
        database.dispose()
