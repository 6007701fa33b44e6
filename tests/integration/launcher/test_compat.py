"""The launcher learns that the servers refuse its client (seed 002), on a real server: the
control plane signs the live servers' client ranges for a released client branch, and
``launcher.compat.check`` / ``changeover launcher status`` say "update required"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from changeover.launcher import compat
from changeover.launcher.engine import Engine
from client_release_helpers import branch_version, client_image, server_fleet
from fleet_helpers import ok
from patchjob_helpers import job_body, running, wait_done
from tests_helpers import Server, free_port, run_cli, start_server, stop_server, wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(
        tmp_path / "server",
        None,
        env={"CHANGEOVER_PATCH_TICK_S": "0.1", "CHANGEOVER_PUBLISH_EVERY_S": "0.2"},
    )
    try:
        yield srv
    finally:
        stop_server(srv)


def test_update_required_once_the_servers_refuse_the_installed_client(
    server: Server, tmp_path: Path
) -> None:
    c, agents = server_fleet(server, "lc", ["lc-h1"])
    client_image(c, "lc-client")
    game = tmp_path / "game"
    engine = Engine(server.url + "/content", game, "lc-client")
    assert compat.check(engine).message == "nothing is installed yet"
    engine.sync()
    before = compat.check(engine)
    assert before.status == "unknown" and "publish no client compatibility" in before.message
    assert before.installed == "1.4"

    body = job_body(
        "lc",
        "forced",
        client_release={"image": "lc-client", "branch": "production", "version": "1.5"},
    )
    with running(agents) as bg:
        job = ok(c.post("/patchjobs", json=body), 201)
        assert wait_done(c, job["id"], bg)["status_name"] == "Completed"
        assert branch_version(c, "lc-client") == 2
        # Released: the new servers take 1.5 and every older client, so 1.4 still plays
        # (the launcher offers the update, nobody is refused).
        ok_now = wait_for(
            lambda: (a := compat.check(engine)).status == "ok" and a, 30, "the compat document"
        )
        assert ok_now.message == "the servers accept version 1.4"
        # The operator now requires 1.5 on the new servers: 1.4 is refused.
        ok(c.put("/images/lc-srv/versions/2/compat", json={"client_min": "1.5"}))
        refused = wait_for(
            lambda: (a := compat.check(engine)).status == "update_required" and a,
            30,
            "the servers to refuse 1.4",
        )
        assert refused.client_min == "1.5"
        shown = run_cli("launcher", "status", str(game))
        assert shown.returncode == 0, shown.stderr
        assert "servers: update required" in shown.stdout, shown.stdout
        as_json = json.loads(run_cli("launcher", "status", str(game), "--json").stdout)
        assert as_json["compat"]["status"] == "update_required"
        # Updated, the client is accepted again.
        engine.sync()
        assert compat.check(engine).status == "ok"
        assert "servers: ok" in run_cli("launcher", "status", str(game)).stdout

    # A server that cannot be reached: unknown, with the reason, never an error.
    offline = Engine(f"http://127.0.0.1:{free_port()}/content", game, "lc-client")
    gone = compat.check(offline)
    assert gone.status == "unknown" and gone.message.startswith("cannot check with the servers")
