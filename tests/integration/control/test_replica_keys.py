"""Who signs among replicas that share only PostgreSQL and a content bucket (separate
disks): the leader, and only a replica holding every signing key the current root lists.
A replica started without keys adopts the published metadata and never makes keys of its
own or leads; a new leader signs on from what the last one published; after a key is
rotated through one replica, a replica with the old key cannot lead until it gets the new
one. A launcher that pinned the first root follows every step."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from replica_helpers import leads, role
from s3_helpers import S3_CREDENTIALS
from tests_helpers import Server, release, run_cli, start_server, stop_server, wait_for

pytestmark = [pytest.mark.ha, pytest.mark.timeout(300), pytest.mark.slow]


def _copy_keys(source: Path, dest: Path) -> None:
    """What an operator does for each replica meant to sign: the private keys alone."""
    (dest / "keys").mkdir(parents=True, exist_ok=True, mode=0o700)
    for pem in (source / "keys").glob("*.pem"):
        shutil.copy2(pem, dest / "keys" / pem.name)


def _sync(public: str, target: Path) -> dict[str, Any]:
    r = run_cli(
        "launcher", "sync", public, str(target), "--image", "keys", "--branch", "live", "--json"
    )
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def _point(srv: Server, number: int) -> None:
    r = srv.client().put("/images/keys/branches/live", json={"version": str(number)})
    assert r.status_code == 200, r.text


def test_only_replicas_with_the_current_keys_lead_and_sign(
    pg_url: str, bucket_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    env = {
        "CHANGEOVER_CONTENT_BUCKET": bucket_url,
        "CHANGEOVER_S3_ENDPOINT": s3_endpoint,
        "CHANGEOVER_LEADER_LEASE_S": "2",
        **S3_CREDENTIALS,
    }
    name, prefix = bucket_url.removeprefix("s3://").split("/", 1)
    public = f"{s3_endpoint}/{name}/{prefix}"
    game = tmp_path / "game"
    a_dir, b_dir, c_dir = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    started: list[Server] = []
    try:
        a = start_server(a_dir, pg_url, env=env)
        started.append(a)
        wait_for(lambda: leads(a), 30, "the first replica to lead")
        _copy_keys(a_dir, b_dir)
        b = start_server(b_dir, pg_url, env=env)
        c = start_server(c_dir, pg_url, env=env)  # no keys given
        started += [b, c]
        assert not list((c_dir / "keys").glob("*.pem"))  # none made by accident
        assert role(b)["can_lead"] and not role(c)["can_lead"]

        ca = a.client()
        assert ca.post("/images", json={"name": "keys"}).status_code == 201
        release(ca, "keys", {"bin/game": b"one" * 1000}, "v1")
        _point(a, 1)
        assert _sync(public, game)["version"] == 1  # the launcher pins root 1 here

        # The leader dies: the replica with keys takes over and signs on from what the
        # dead one published (its own copy of the state is from its start).
        a.process.send_signal(signal.SIGKILL)
        a.process.wait()
        wait_for(lambda: leads(b), 30, "the replica with keys to lead")
        release(b.client(), "keys", {"bin/game": b"two" * 1000}, "v2")
        _point(b, 2)
        assert _sync(public, game)["version"] == 2

        # A key rotated through the leader's data directory (the CLI, as the README says).
        rotated = run_cli(
            "keys", "rotate", "targets", "--data", str(b_dir), env={**env, "CHANGEOVER_URL": ""}
        )
        assert rotated.returncode == 0, rotated.stderr
        _point(b, 1)
        assert _sync(public, game)["version"] == 1  # signed by the new key, via new root

        # The old leader comes back with the old key: it may not lead. Neither may the
        # replica without keys, so when the leader stops nobody signs ...
        started.remove(a)
        a.close()  # its clients: the process is gone
        a = start_server(a_dir, pg_url, env=env)
        started.append(a)
        assert not role(a)["can_lead"] and not role(c)["can_lead"]
        started.remove(b)
        stop_server(b)
        assert not leads(a) and not leads(c)
        # ... until the operator gives it the new key.
        _copy_keys(b_dir, a_dir)
        assert role(a)["can_lead"]
        wait_for(lambda: leads(a), 30, "the replica given the new key to lead")
        _point(a, 2)
        assert _sync(public, game)["version"] == 2
        assert not leads(c) and not list((c_dir / "keys").glob("*.pem"))
        # Every replica serves the same metadata the bucket holds.
        stamp = httpx.get(f"{public}/metadata/timestamp.json").content
        assert httpx.get(f"{c.url}/content/metadata/timestamp.json").content == stamp
    finally:
        for srv in started:
            stop_server(srv)
