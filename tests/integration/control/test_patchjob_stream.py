"""The live patch-job stream (server-sent events) against a real server and a real job."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fleet_helpers import ok
from patchjob_helpers import job_body, running, two_build_fleet, wait_done
from tests_helpers import wait_for

pytestmark = pytest.mark.timeout(180)


SERVER_ENV = {"CHANGEOVER_PATCH_TICK_S": "0.1"}
"""The reconciler looks at jobs every 0.1 s in these servers (0.5 s by default)."""


def read_sse(response: httpx.Response) -> Iterator[tuple[str, Any, str | None]]:
    """(event, data, id) for each message of a server-sent event stream."""
    kind, data, ident = "message", "", None
    for line in response.iter_lines():
        if line == "":
            if data:
                yield kind, json.loads(data), ident
            kind, data, ident = "message", "", None
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                kind = value
            elif field == "data":
                data += value
            elif field == "id":
                ident = value


def stream(server: Any, job_id: int, token: str | None = None, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token or server.admin_token}", **kw.pop("headers", {})}
    return httpx.stream(
        "GET",
        f"{server.url}/api/v1/patchjobs/{job_id}/stream",
        headers=headers,
        timeout=60,
        **kw,
    )


def test_stream_follows_a_job_to_its_end(server: Any) -> None:
    c, agents = two_build_fleet(server, "sse", ["sse-h1", "sse-h2"], per_host=1)
    job = ok(c.post("/patchjobs", json=job_body("sse", "forced")), 201)
    seen: list[tuple[str, Any, str | None]] = []
    with stream(server, job["id"], server.token("viewer")) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        # The job only moves once agents sync: it advances while we are subscribed.
        with running(agents):
            for message in read_sse(r):
                seen.append(message)
                if message[0] == "end":
                    break
    kinds = [k for k, _, _ in seen]
    assert kinds[-1] == "end" and seen[-1][1]["status_name"] == "Completed"
    events = [d for k, d, _ in seen if k == "event"]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(ids) == len(set(ids))  # in order, none twice
    assert events[0]["kind"] == "created" and events[-1]["kind"] == "finished"
    assert [str(e["id"]) for e in events] == [i for k, _, i in seen if k == "event"]
    statuses = [d["status_name"] for k, d, _ in seen if k == "job"]
    assert len(statuses) >= 2 and statuses[-1] == "Completed"  # pushed as it changed
    # The stream's own polls of the API are not logged (twice a second per viewer); the
    # stream itself is, once it ends.
    log = server.log.read_text()
    assert f"/patchjobs/{job['id']}/events" not in log
    wait_for(lambda: f"GET /api/v1/patchjobs/{job['id']}/stream 200" in server.log.read_text())
    assert ok(c.get(f"/patchjobs/{job['id']}/events"))["events"] == events
    auth = {"Authorization": f"Bearer {server.admin_token}"}
    scraped = httpx.get(server.url + "/metrics", headers=auth).text
    assert re.search(r'^changeover_patch_jobs\{status="completed"\} [1-9]', scraped, re.M)

    # Reconnecting with Last-Event-ID (or ?after=) sends only what came later.
    middle = ids[len(ids) // 2]
    for kw in ({"headers": {"Last-Event-ID": str(middle)}}, {"params": {"after": middle}}):
        with stream(server, job["id"], **kw) as r:
            again = list(read_sse(r))
        assert [d["id"] for k, d, _ in again if k == "event"] == [i for i in ids if i > middle]
        assert again[-1][0] == "end"


def test_stream_refusals(server: Any) -> None:
    c, agents = two_build_fleet(server, "ssr", ["ssr-h1"], per_host=1)
    job = ok(c.post("/patchjobs", json=job_body("ssr", "forced")), 201)
    base = f"{server.url}/api/v1/patchjobs"
    auth = {"Authorization": f"Bearer {server.admin_token}"}
    assert httpx.get(f"{base}/{job['id']}/stream").status_code == 401
    bad = httpx.get(f"{base}/{job['id']}/stream", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and "malformed" in bad.json()["message"]
    missing = httpx.get(f"{base}/999999/stream", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert httpx.get(f"{base}/abc/stream", headers=auth).status_code == 422
    for after in ("-1", "x", "9" * 40):
        r = httpx.get(f"{base}/{job['id']}/stream", headers=auth, params={"after": after})
        assert r.status_code == 422, after
    huge = {**auth, "Last-Event-ID": "9" * 100}
    assert httpx.get(f"{base}/{job['id']}/stream", headers=huge).status_code == 422

    # A token revoked while it watches ends the stream with an error event.
    made = ok(c.post("/tokens", json={"scope": "viewer", "name": "watcher"}), 201)
    with stream(server, job["id"], made["token"]) as r:
        messages = read_sse(r)
        assert next(messages)[0] in ("event", "job")
        ok(c.delete(f"/tokens/{made['id']}"))
        rest = list(messages)
    assert rest[-1][0] == "error"
    assert rest[-1][1]["status"] == 401 and "revoked" in rest[-1][1]["message"]
    with running(agents):
        wait_done(c, job["id"])
