"""A control plane killed (SIGKILL) in the middle of a job's client release, on PostgreSQL:
the release was recorded and its application had begun (its transaction waits on the
client branch's row, which the test holds locked), so the kill lands exactly between the
record and the effect. After the restart the job completes and the branch has moved once;
a second kill and restart after completion moves nothing again."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy

from client_release_helpers import branch_version, client_image, server_fleet
from crash_helpers import database
from fleet_helpers import ok
from patchjob_helpers import Agents, actions, events, job_body
from tests_helpers import Server, start_server, stop_server, wait_for

pytestmark = pytest.mark.timeout(240)

TICKS = {"CHANGEOVER_PATCH_TICK_S": "0.1"}


def _restart(srv: Server, data: Path, url: str) -> Server:
    """SIGKILL the server and start it again on the same port (the agents' URL)."""
    srv.process.kill()
    srv.process.wait()
    token = srv.admin_token
    srv.close()
    new = start_server(data, url, port=urlsplit(srv.url).port, env=TICKS)
    new.admin_token = token
    return new


def _release_row(engine: sqlalchemy.Engine, job_id: int) -> Any:
    with engine.connect() as c:
        return c.execute(
            sqlalchemy.text(
                "SELECT key, applied_at FROM patch_job_actions"
                ' WHERE job_id = :id AND action LIKE \'%"type": "ReleaseClient"%\''
            ),
            {"id": job_id},
        ).one_or_none()


def _blocked_by(engine: sqlalchemy.Engine, holder_pid: int) -> bool:
    """A server transaction waits for the lock ``holder_pid`` holds (the branch's row):
    the release's UPDATE of the branch, its applied mark with it, uncommitted."""
    with engine.connect() as c:
        return bool(
            c.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE :holder = ANY(pg_blocking_pids(pid)) AND query ILIKE 'UPDATE branches%'"
                ),
                {"holder": holder_pid},
            ).scalar()
        )


def test_release_killed_between_record_and_effect_moves_the_branch_once(
    tmp_path: Path, pg_url: str
) -> None:
    srv = start_server(tmp_path, pg_url, env=TICKS)
    bg: Agents | None = None
    try:
        c, agents = server_fleet(srv, "crk", ["crk-h1", "crk-h2"])
        client_image(c, "crk-client")
        # The agents' own client: a restart closes every client the server object made.
        agent_http = httpx.Client(
            base_url=srv.url + "/api/v1",
            headers={"Authorization": agents[0].client.headers["Authorization"]},
            timeout=10,
        )
        for a in agents:
            a.client = agent_http
        bg = Agents(agents, tolerate_down=True).start()
        with database(pg_url, tmp_path) as engine:
            holder = engine.connect()
            lock = holder.begin()
            # The client branch's row, held: the release's UPDATE will wait for it.
            holder.execute(
                sqlalchemy.text(
                    "SELECT b.id FROM branches b JOIN images i ON i.id = b.image_id"
                    " WHERE i.name = 'crk-client' AND b.name = 'production' FOR UPDATE"
                )
            ).one()
            holder_pid = holder.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar_one()
            body = job_body(
                "crk",
                "forced",
                client_release={"image": "crk-client", "branch": "production", "version": "1.5"},
            )
            job = ok(c.post("/patchjobs", json=body), 201)
            wait_for(
                lambda: (
                    _release_row(engine, job["id"]) is not None and _blocked_by(engine, holder_pid)
                ),
                90,
                "the release to be recorded and its application to wait on the branch",
            )
            key, applied_at = _release_row(engine, job["id"])
            assert applied_at is None  # the mark is in the waiting, uncommitted transaction
            srv = _restart(srv, tmp_path, pg_url)
            lock.rollback()
            holder.close()
            c = srv.client()
            done = wait_for(
                lambda: (j := ok(c.get(f"/patchjobs/{job['id']}")))["status"] >= 7 and j,
                90,
                "the job to finish after the restart",
            )
            assert done["status_name"] == "Completed", done["reason"]
            assert done["client_release"]["released"] is True
            assert branch_version(c, "crk-client") == 2
            _key, applied_at = _release_row(engine, job["id"])
            assert applied_at is not None

            def moves() -> list[Any]:
                history = ok(c.get("/images/crk-client/branches/production/history"))
                return [e for e in history if e["actor"] == f"patchjob {job['id']}"]

            assert len(moves()) == 1
            # A kill after the job completed: nothing is replayed, the branch stays moved once.
            srv = _restart(srv, tmp_path, pg_url)
            c = srv.client()
            assert ok(c.get(f"/patchjobs/{job['id']}"))["status_name"] == "Completed"
            assert len(moves()) == 1 and branch_version(c, "crk-client") == 2
            acts = actions(c, job["id"])
            # Nothing left to replay: every recorded action was applied, each once.
            assert all(a["applied_at"] is not None for a in acts)
            assert [a["key"] for a in acts if a["action"]["type"] == "ReleaseClient"] == [key]
            applied = Counter(
                e["data"]["key"] for e in events(c, job["id"]) if e["kind"] == "action"
            )
            assert applied[key] == 1 and set(applied.values()) == {1}
    finally:
        if bg is not None:
            bg.stop()
            agent_http.close()
        stop_server(srv)
