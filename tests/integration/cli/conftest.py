"""The CLI only speaks HTTP: its tests run once, against a control plane on SQLite.

Every endpoint it calls is tested on SQLite and PostgreSQL by the API tests; running each
CLI scenario (a Python start-up per command) twice more would only double the wait.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests_helpers import Server, start_server, stop_server


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """As the suite's ``server`` (a module's ``SERVER_ENV`` included), on SQLite alone."""
    data = tmp_path_factory.mktemp("server-sqlite")
    srv = start_server(data, None, env=getattr(request.module, "SERVER_ENV", None))
    try:
        yield srv
    finally:
        stop_server(srv)
        shutil.rmtree(data, ignore_errors=True)
