"""Fixtures shared by the whole suite: real servers, real databases, the real CLI.

``server`` starts ``changeover server`` as a separate process on a free loopback port,
once on SQLite and once on the machine's PostgreSQL (a fresh schema per server). Under CI a
missing PostgreSQL fails the run; on a developer's machine it skips with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests_helpers import CLI, free_port, run_cli, wait_for

PG_BASE = os.environ.get("CHANGEOVER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The PostgreSQL test database, checked once."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(PG_BASE)
    try:
        with engine.connect() as c:
            c.exec_driver_sql("select 1")
    except Exception as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_BASE} is required under CI: {e}")
        pytest.skip(f"PostgreSQL at {PG_BASE} is not reachable: {e}")
    finally:
        engine.dispose()
    return PG_BASE


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    yield from _pg_schema(pg_admin_url)


def _pg_schema(base: str) -> Iterator[str]:
    import sqlalchemy

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with engine.connect() as c:
            c.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


@dataclass
class Server:
    url: str
    data: Path
    database_url: str | None
    admin_token: str
    process: subprocess.Popen[bytes]
    log: Path
    _clients: list[httpx.Client] = field(default_factory=list)

    def env(self, token: str | None = None) -> dict[str, str]:
        return {
            "CHANGEOVER_URL": self.url,
            "CHANGEOVER_TOKEN": self.admin_token if token is None else token,
        }

    def cli(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env(token))

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        c = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=60)
        self._clients.append(c)
        return c

    def token(self, scope: str, **extra: Any) -> str:
        r = self.client().post("/tokens", json={"scope": scope, "name": f"{scope}-test", **extra})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def close(self) -> None:
        for c in self._clients:
            c.close()


def start_server(data: Path, database_url: str | None) -> Server:
    db_args = ["--database", database_url] if database_url else []
    made = run_cli("token", "create", "--scope", "admin", "--data", str(data), *db_args, "--json")
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    port = free_port()
    log = data / "server.log"
    env = {**os.environ}
    env.pop("CHANGEOVER_DATABASE_URL", None)
    env["CHANGEOVER_JOB_POLL_S"] = "0.05"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*CLI, "server", "--data", str(data), "--port", str(port), *db_args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, 30, "the control plane to answer /healthz")
    return Server(url, data, database_url, token, proc, log)


def stop_server(server: Server) -> None:
    server.close()
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A running control plane, one per test module and database."""
    data = tmp_path_factory.mktemp(f"server-{request.param}")
    if request.param == "postgres":
        base = request.getfixturevalue("pg_admin_url")
        schemas = _pg_schema(base)
        url = next(schemas)
    else:
        schemas, url = None, None
    srv = start_server(data, url)
    try:
        yield srv
    finally:
        stop_server(srv)
        if schemas is not None:
            for _ in schemas:
                pass
        shutil.rmtree(data, ignore_errors=True)
