"""A build machine trial with nothing faked: a real agent stages an update that is not yet
a version, runs the sample game from it with the fleet's profile, and the trial judges the
real process; a build whose server crashes fails, saying how it ended."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import start_server, stop_server
from fleet_helpers import AgentProc, arena_files, arena_fleet, ok
from tests_helpers import push_files, wait_for, wait_job

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def _update(c: httpx.Client, files: dict[str, bytes]) -> dict[str, Any]:
    upd = push_files(c, "arena", files, None)
    assert wait_job(c, f"/updates/{upd['id']}")["status_name"] == "Completed"
    return upd


def _trial(c: httpx.Client, update_id: int) -> dict[str, Any]:
    t = ok(
        c.post(f"/updates/{update_id}/trials", json={"fleet": "arena", "hold_s": 2}),
        201,
    )
    out: dict[str, Any] = wait_job(c, f"/trials/{t['id']}", timeout_s=120)
    return out


def test_a_real_game_server_is_tried_on_a_build_machine(tmp_path: Path) -> None:
    (tmp_path / "server").mkdir()
    srv = start_server(tmp_path / "server", None)
    agent: AgentProc | None = None
    try:
        c = srv.client()
        arena_fleet(c, [("bm", "eu")], 1)
        agent = AgentProc(srv, srv.token("agent"), "bm", "eu", tmp_path / "bm").start()
        wait_for(
            lambda: [i["state"] for i in ok(c.get("/fleets/arena/instances"))] == ["ready"],
            90,
            "the build machine's own instance",
        )
        files = arena_files("build-v2")
        files["NOTES.txt"] = b"a candidate build, not a version yet\n"
        good = _update(c, files)
        passed = _trial(c, good["id"])
        assert (passed["status_name"], passed["result"]) == ("Completed", "passed"), passed
        staged = agent.work / "versions" / good["manifest_id"]
        assert (staged / "NOTES.txt").read_bytes() == files["NOTES.txt"]
        wait_for(
            lambda: ok(c.get(f"/instances/{passed['instance_id']}"))["state"] == "stopped",
            30,
            "the trial's game server to stop",
        )
        assert [i["profile"] for i in ok(c.get("/fleets/arena/instances"))] == ["arena-v1"]

        files["arena_server.py"] = b"import sys\nsys.exit(3)\n"
        bad = _update(c, files)
        failed = _trial(c, bad["id"])
        assert (failed["status_name"], failed["result"]) == ("Failed", "failed"), failed
        assert "code 3" in failed["message"], failed["message"]
        shown = ok(c.get(f"/updates/{bad['id']}"))["trial"]
        assert (shown["id"], shown["result"]) == (failed["id"], "failed")
    finally:
        if agent is not None:
            agent.cleanup()
        stop_server(srv)
