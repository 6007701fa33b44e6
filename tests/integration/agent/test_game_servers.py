"""Real game servers that know nothing of the SDK, run and upgraded by a real agent.

``worldserver/world-server`` is a persistent-world UDP server configured by its command
line alone (as a distribution's package is): it opens its world exclusively, saves it on
SIGTERM or SIGINT and answers a status probe. The agent here is told its games listen on
127.0.0.2 (``--address``), and the server binds there only.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import start_server, stop_server
from fleet_helpers import AgentProc, ok, release
from patchjob_helpers import actions, events, wait_done
from tests_helpers import wait_for

pytestmark = pytest.mark.timeout(240)

ADDRESS = "127.0.0.2"
SERVER = Path(__file__).parent / "worldserver" / "world-server"


def build(version: str) -> dict[str, bytes]:
    # The version is baked into the build, so the two builds differ in content.
    return {"world-server": SERVER.read_bytes(), "VERSION": version.encode()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    server = start_server(tmp_path_factory.mktemp("worlds-server"), None)
    c = server.client()
    ok(c.post("/images", json={"name": "world"}), 201)
    versions = {v: release(c, "world", build(v), v, ["world-server"]) for v in ("v1", "v2")}
    ok(c.post("/applications", json={"name": "world", "type": "game"}), 201)
    ok(c.post("/environments", json={"name": "prod"}), 201)
    ok(c.post("/regions", json={"name": "eu"}), 201)
    work = tmp_path_factory.mktemp("world-agents") / "w1"
    agent = AgentProc(
        server, server.token("agent"), "w1", "eu", work, extra=["--address", ADDRESS]
    ).start()
    try:
        yield {"server": server, "c": c, "agent": agent, "work": work, "versions": versions}
    finally:
        agent.cleanup()
        print(agent.log()[-6000:])  # shown by pytest on failure
        stop_server(server)


def profile(
    c: httpx.Client, name: str, version: str, args: tuple[str, ...] = (), **spec: Any
) -> None:
    body = {
        "name": name,
        "application": "world",
        "image": "world",
        "version": version,
        # No slash: the build's own executable, found in its version directory.
        "command": [
            "world-server",
            "--bind",
            ADDRESS,
            "--port",
            "{port}",
            "--world",
            "{state_dir}/world.json",
            "--version",
            version,
            *args,
        ],
        "ports": [{"name": "game", "protocol": "udp"}],
        "health": {"type": "udp", "send": "status", "expect": "ok ", "interval_s": 0.2},
        **spec,
    }
    ok(c.post("/profiles", json=body), 201)


def fleet(c: httpx.Client, name: str, prof: str, per_host: int) -> None:
    body = {
        "name": name,
        "application": "world",
        "environment": "prod",
        "hosts": ["w1"],
        "instances_per_host": per_host,
        "profile": prof,
    }
    ok(c.post("/fleets", json=body), 201)


def ready(c: httpx.Client, name: str, n: int) -> list[dict[str, Any]] | None:
    rows = list(ok(c.get(f"/fleets/{name}/instances")))
    return rows if len(rows) == n and all(r["state"] == "ready" for r in rows) else None


def ask(port: int, what: bytes) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(what, (ADDRESS, port))
        return s.recv(1024).decode()


def saved_world(work: Path, fleet_name: str, slot: int) -> Any:
    return json.loads((work / "slots" / fleet_name / str(slot) / "world.json").read_text())


def test_each_instance_has_its_own_world_and_a_forced_job_hands_it_on(
    world: dict[str, Any],
) -> None:
    c, work = world["c"], world["work"]
    # Profile: SIGINT is how this server is to be stopped; the job below names no signal.
    for v in ("v1", "v2"):
        profile(c, f"pw-{v}", v, state="exclusive", stop_signal="SIGINT", stop_timeout_s=20)
    fleet(c, "pw", "pw-v1", per_host=2)
    rows = wait_for(lambda: ready(c, "pw", 2), 60, "two world servers ready")
    assert sorted(r["slot"] for r in rows) == [0, 1]
    assert all(r["address"] == ADDRESS and r["restarts"] == 0 for r in rows)
    by_slot = {r["slot"]: r for r in rows}
    for _ in range(3):
        ask(by_slot[0]["port"], b"visit")
    assert ask(by_slot[1]["port"], b"visit") == "visits 1"  # its own world, not slot 0's

    # A side-by-side method is refused for exclusive state, with the reason.
    body = {
        "name": "pw ab",
        "environment": "prod",
        "application": "world",
        "builds": [{"old": "pw-v1", "new": "pw-v2"}],
        "fleets": ["pw"],
    }
    refused = c.post("/patchjobs", json={**body, "method": "ab"})
    assert refused.status_code == 400
    assert "declare exclusive state" in refused.text and "forced" in refused.text

    job = ok(
        c.post(
            "/patchjobs",
            json={
                **body,
                "name": "pw forced",
                "method": "forced",
                "rolling": {"min_healthy_time_s": 0.5, "healthy_deadline_s": 60},
            },
        ),
        201,
    )
    done = wait_done(c, job["id"], timeout_s=120)
    assert done["status_name"] == "Completed", done
    new = wait_for(lambda: ready(c, "pw", 2), 60, "the new world servers")
    assert {r["profile"] for r in new} == {"pw-v2"}
    new_by_slot = {r["slot"]: r for r in new}
    assert {new_by_slot[s]["replaces"] for s in (0, 1)} == {by_slot[0]["id"], by_slot[1]["id"]}
    assert new_by_slot[0]["replaces"] == by_slot[0]["id"]  # same host, same slot
    # Each new server opened the world its predecessor saved, on the profile's signal.
    assert ask(new_by_slot[0]["port"], b"visit") == "visits 4"
    assert ask(new_by_slot[1]["port"], b"visit") == "visits 2"
    assert saved_world(work, "pw", 0)["saves"] == [{"version": "v1", "signal": "SIGINT"}]
    # How the old ones ended is recorded, in the API and in the job's events.
    for old in by_slot.values():
        ended = ok(c.get(f"/instances/{old['id']}"))["exit"]
        assert (ended["how"], ended["code"], ended["signal"], ended["reason"]) == (
            "exited",
            0,
            None,
            "stop",
        )
    messages = [e["message"] for e in events(c, job["id"]) if e["kind"] == "instance"]
    assert any(
        f"instance {by_slot[0]['id']} on w1 exited by itself with code 0" in m for m in messages
    ), messages
    # The old build stays staged for a revert (the agent's --keep-staged, 12 h).
    v1 = world["versions"]["v1"]["manifest_id"]
    assert v1 in ok(c.get("/hosts"))[0]["staged"]


def test_a_server_that_stops_answering_is_stopped_gracefully_and_restarted(
    world: dict[str, Any],
) -> None:
    c, work = world["c"], world["work"]
    health = {"type": "udp", "send": "status", "expect": "ok ", "interval_s": 0.2}
    profile(c, "hang-v1", "v1", health={**health, "timeout_s": 0.5, "failures": 2})
    fleet(c, "hang", "hang-v1", per_host=1)
    (row,) = wait_for(lambda: ready(c, "hang", 1), 60, "the world server")
    ask(row["port"], b"visit")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"hang", (ADDRESS, row["port"]))  # still bound: "not refused" would pass it

    def restarted() -> dict[str, Any] | None:
        got = ok(c.get(f"/instances/{row['id']}"))
        return got if got["restarts"] >= 1 and got["state"] == "ready" else None

    again = wait_for(restarted, 60, "the hung server to be replaced by a fresh process")
    assert again["exit"]["how"] == "exited" and again["exit"]["code"] == 0
    assert again["exit"]["reason"] == "failed health check"
    # It got its stop signal, not SIGKILL: it saved its world, which the next one opened.
    assert saved_world(work, "hang", again["slot"])["saves"] == [
        {"version": "v1", "signal": "SIGTERM"}
    ]
    assert ask(again["port"], b"visit") == "visits 2"


@pytest.mark.parametrize("method", ["forced", "rolling"])
def test_a_job_whose_new_build_never_answers_brings_the_old_one_back_on_the_same_world(
    world: dict[str, Any], method: str
) -> None:
    """Exclusive state: the revert stops the new server (it saves the world) and then
    starts the old build on the same slot, never beside it."""
    c, work = world["c"], world["work"]
    name = f"rb-{method}"
    terms = {"state": "exclusive", "stop_signal": "SIGINT", "stop_timeout_s": 20}
    profile(c, f"{name}-v1", "v1", **terms)
    # The broken build: its server starts and holds the world, but answers no probe.
    profile(c, f"{name}-v2", "v2", args=("--hung",), **terms)
    fleet(c, name, f"{name}-v1", per_host=1)
    (first,) = wait_for(lambda: ready(c, name, 1), 60, "the world server")
    for _ in range(3):
        ask(first["port"], b"visit")

    job = ok(
        c.post(
            "/patchjobs",
            json={
                "name": name,
                "environment": "prod",
                "application": "world",
                "method": method,
                "builds": [{"old": f"{name}-v1", "new": f"{name}-v2"}],
                "fleets": [name],
                "rolling": {"min_healthy_time_s": 0.5, "healthy_deadline_s": 5, "max_surge": 0},
            },
        ),
        201,
    )
    done = wait_done(c, job["id"], timeout_s=120)
    assert done["status_name"] == "Rolled back", done
    assert "failed their health gate" in done["reason"]
    assert "reverted to the old build" in done["reason"]

    rows = ok(c.get(f"/fleets/{name}/instances", params={"all": "true"}))
    by_profile = {r["profile"]: r for r in rows}
    assert len(rows) == 3 and set(by_profile) == {f"{name}-v1", f"{name}-v2"}
    hung = by_profile[f"{name}-v2"]
    (back,) = [r for r in rows if r["replaces"] == hung["id"]]
    assert hung["replaces"] == first["id"]
    # The old build is back, on the slot the new one had taken over from the first.
    assert (back["profile"], back["state"], back["slot"]) == (f"{name}-v1", "ready", first["slot"])
    assert hung["slot"] == first["slot"] and hung["state"] == "stopped"
    # The broken server was stopped with the profile's signal and saved the world (exit 0,
    # not killed); the old build opened that world: every visit is still there.
    assert hung["exit"] is not None
    assert (hung["exit"]["how"], hung["exit"]["code"], hung["exit"]["reason"]) == (
        "exited",
        0,
        "stop",
    )
    assert saved_world(work, name, first["slot"])["saves"] == [
        {"version": "v1", "signal": "SIGINT"},
        {"version": "v2", "signal": "SIGINT"},
    ]
    assert ask(back["port"], b"visit") == "visits 4"
    # Never two servers on one world: a second one would have exited 3 at once (the world's
    # lock), and a restart would show.
    assert all(r["exit"] is None or r["exit"]["how"] != "crashed" for r in rows), rows
    assert all(r["restarts"] == 0 for r in rows), rows
    # The revert's order, as the job recorded it: stop the new instance, then start the old.
    acts = [a for a in actions(c, job["id"]) if "/revert/" in a["key"]]
    kinds = [(a["key"].split("/")[2], a["applied_at"]) for a in acts]
    stop_at = next(at for kind, at in kinds if kind == "stop")
    start_at = next(at for kind, at in kinds if kind == "start")
    assert stop_at < start_at, acts
    # The job's own view of its instance: the old one, the broken one and the revert's, with
    # how each process ended.
    (member,) = ok(c.get(f"/patchjobs/{job['id']}/instances"))["instances"]
    assert member["instance_id"] == first["id"]
    assert [member[k]["id"] for k in ("old", "new", "revert")] == [
        first["id"],
        hung["id"],
        back["id"],
    ]
    for k in ("old", "new"):
        assert member[k]["exit"]["how"] == "exited" and member[k]["exit"]["code"] == 0
        assert member[k]["exit_text"].startswith("exited by itself with code 0")
    assert member["revert"]["exit"] is None and member["revert"]["state"] == "ready"
