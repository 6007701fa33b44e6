"""Fixtures shared by the whole suite: real servers, real databases, the real CLI.

``server`` starts ``changeover server`` as a separate process on a free loopback port,
once on SQLite and once on the machine's PostgreSQL (a fresh schema per server). A missing
PostgreSQL goes through ``gates.unavailable``: a skip with the reason on a developer's
machine, a failure under CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gates import unavailable
from s3_helpers import S3_CREDENTIALS
from tests_helpers import Server, start_server, stop_server

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
        unavailable("postgresql", f"{PG_BASE} is not reachable: {e}")
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


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A running control plane, one per test module and database. A module's
    ``SERVER_ENV`` (a dict) adds settings to its servers' environment."""
    data = tmp_path_factory.mktemp(f"server-{request.param}")
    if request.param == "postgres":
        base = request.getfixturevalue("pg_admin_url")
        schemas = _pg_schema(base)
        url = next(schemas)
    else:
        schemas, url = None, None
    srv = start_server(data, url, env=getattr(request.module, "SERVER_ENV", None))
    try:
        yield srv
    finally:
        stop_server(srv)
        if schemas is not None:
            for _ in schemas:
                pass
        shutil.rmtree(data, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow scenarios first, the longest allowed (by its timeout marker) first of all:
    with xdist's ``--dist loadfile`` a slow file that starts last runs alone at the end,
    which once added minutes to ``make test``. A stable sort: everything else keeps its
    order."""

    def weight(item: pytest.Item) -> float:
        if item.get_closest_marker("slow") is None:
            return 0.0
        timeout = item.get_closest_marker("timeout")
        return -float(timeout.args[0]) if timeout is not None and timeout.args else -300.0

    items.sort(key=weight)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3-protocol server on loopback: moto's standalone server (see the README's
    "What is real in the tests" for why this one), one per test process."""
    from tests_helpers import free_port, wait_for

    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.path.exists(exe):
        unavailable("moto", "moto's server is not installed (pip install 'moto[server]')")
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"moto_server exited: {log.read_text()}")
        try:
            return httpx.get(url, timeout=1).status_code < 500
        except httpx.TransportError:
            return False

    try:
        wait_for(up, 60, "the S3 server to answer")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def bucket_url(s3_endpoint: str) -> str:
    """A new bucket that anyone may read (as a CDN origin would be): its ``s3://`` URL."""
    import boto3

    name = f"content-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    s3.create_bucket(Bucket=name)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{name}/*",
            }
        ],
    }
    s3.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))
    return f"s3://{name}/game-content"


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[tuple[str, list[Server]]]:
    """Three replicas on the test's PostgreSQL schema sharing ``tmp_path`` (the first
    leads), and HAProxy in front with ``deploy/haproxy.cfg``: the balancer's URL and them."""
    from replica_helpers import REPLICA, balanced_replicas

    with balanced_replicas(pg_url, tmp_path, REPLICA) as got:
        yield got
