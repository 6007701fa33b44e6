"""Build machine trials (seed 000, step 1) against a real server, on SQLite and on
PostgreSQL: an update runs on a host of a fleet before its diff, is judged, shows the
verdict, and an image can refuse a diff without a passed one.

Agents are ``FakeAgent``s: the real agent protocol over HTTP, without processes (a real
agent and game server run a trial in tests/e2e/test_trial_e2e.py).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fleet_helpers import FakeAgent, catalogue, ok, profile, release
from tests_helpers import push_files, wait_for, wait_job

pytestmark = pytest.mark.timeout(180)


def _update(c: httpx.Client, image: str, body: bytes) -> dict[str, Any]:
    upd = push_files(c, image, {"game": body}, None, executable=["game"])
    assert wait_job(c, f"/updates/{upd['id']}")["status_name"] == "Completed"
    return ok(c.get(f"/updates/{upd['id']}"))


def _judged(c: httpx.Client, agent: FakeAgent, trial_id: int) -> dict[str, Any]:
    def over() -> dict[str, Any] | None:
        agent.sync()
        t = ok(c.get(f"/trials/{trial_id}"))
        return t if t["status"] in (5, 6) else None

    out: dict[str, Any] = wait_for(over, 60, f"trial {trial_id} to be judged")
    return out


def _trial_instance(agent: FakeAgent, trial_id: int, c: httpx.Client) -> dict[str, Any]:
    def listed() -> dict[str, Any] | None:
        agent.sync()
        iid = ok(c.get(f"/trials/{trial_id}"))["instance_id"]
        return next((i for i in agent.last["instances"] if i["id"] == iid), None)

    out: dict[str, Any] = wait_for(listed, 30, "the trial's instance in the agent's desired state")
    return out


def test_an_update_is_tried_on_the_build_machine_before_its_diff(server: Any) -> None:
    c = server.client()
    ok(c.post("/images", json={"name": "trial"}), 201)
    release(c, "trial", {"game": b"v1"}, "t1", executable=["game"])
    catalogue(c, "tr")
    profile(c, "tr-v1", "tr-game", "trial", "1", capacity=1)
    ok(
        c.post(
            "/fleets",
            json={
                "name": "tr-build",
                "application": "tr-game",
                "environment": "tr-prod",
                "hosts": ["tr-h1"],
                "instances_per_host": 1,
                "profile": "tr-v1",
            },
        ),
        201,
    )
    agent = FakeAgent(server.client(server.token("agent")), "tr-h1", "tr-eu")
    agent.register()
    agent.sync(2)
    (member,) = agent.desired()
    good = _update(c, "trial", b"v2")
    assert good["trial"] is None

    # An image that requires a trial refuses the diff of an untried update.
    assert ok(c.patch("/images/trial", json={"require_trial": True}))["require_trial"] is True
    untried = c.post("/images/trial/diffs", json={"update_id": good["id"]})
    assert untried.status_code == 409, untried.text
    assert f"update {good['id']} has never been tried" in untried.json()["message"]

    # Bad requests are refused and make nothing.
    for body, status, words in (
        ({"fleet": "nope"}, 404, "unknown fleet"),
        ({"fleet": "tr-build", "hold_s": -1}, 400, "hold_s must be"),
        ({"fleet": "tr-build", "host": "tr-h9"}, 400, "not a host of fleet tr-build"),
        ({"fleet": "tr-build", "profile": "nope"}, 404, "unknown profile"),
        ({"fleet": "tr-build", "colour": "red"}, 422, "colour"),
    ):
        r = c.post(f"/updates/{good['id']}/trials", json=body)
        assert r.status_code == status and words in r.text, (body, r.text)
    assert ok(c.get(f"/updates/{good['id']}/trials")) == []
    assert c.post("/updates/999999/trials", json={"fleet": "tr-build"}).status_code == 404

    t = ok(c.post(f"/updates/{good['id']}/trials", json={"fleet": "tr-build", "hold_s": 1}), 201)
    assert (t["status_name"], t["profile"], t["result"]) == ("Queued", "tr-v1", None)
    again = c.post(f"/updates/{good['id']}/trials", json={"fleet": "tr-build"})
    assert again.status_code == 409 and "still running" in again.text

    # The agent runs the update's build with the profile's run spec, beside the fleet's
    # own instance, which stays: the trial's is no member of the fleet.
    item = _trial_instance(agent, t["id"], c)
    assert item["manifest_id"] == good["manifest_id"]
    assert item["profile"] == "tr-v1" and item["spec"]["command"][0] == "game"
    version_1 = ok(c.get("/profiles/tr-v1"))["manifest_id"]
    assert agent.last["instances"][0]["manifest_id"] == version_1
    assert agent.desired()[member] == "running"
    # The fleet's instance page (the dashboard's) says which instance is the trial's.
    listed = ok(c.get("/fleets/tr-build/instance-page"))["instances"]
    assert {i["id"]: i["trial_id"] for i in listed} == {member: None, item["id"]: t["id"]}
    # It takes no players: the fleet's one place goes, then the fleet is full.
    ok(c.post("/allocations", json={"fleet": "tr-build", "players": ["ann"]}), 201)
    full = c.post("/allocations", json={"fleet": "tr-build", "players": ["bob"]})
    assert full.status_code == 409, full.text

    passed = _judged(c, agent, t["id"])
    assert (passed["status_name"], passed["result"]) == ("Completed", "passed"), passed
    assert "healthy for 1 s" in passed["message"]
    assert passed["host"] == "tr-h1" and passed["ended_at"] is not None
    tried = ok(c.get(f"/instances/{passed['instance_id']}"))
    assert (tried["desired"], tried["trial_id"]) == ("stopped", t["id"])
    assert ok(c.get(f"/instances/{member}"))["trial_id"] is None
    shown = ok(c.get(f"/updates/{good['id']}"))["trial"]
    assert (shown["id"], shown["result"]) == (t["id"], "passed")
    assert agent.desired()[member] == "running"  # the fleet's instance never moved
    diff = ok(c.post("/images/trial/diffs", json={"update_id": good["id"]}), 201)
    ok(c.post(f"/diffs/{diff['id']}/reject"))

    # A build that crashes fails its trial, says why, and its diff stays refused.
    bad = _update(c, "trial", b"v3 crashes")
    t2 = ok(c.post(f"/updates/{bad['id']}/trials", json={"fleet": "tr-build", "hold_s": 60}), 201)
    crashing = _trial_instance(agent, t2["id"], c)
    agent.states[crashing["id"]] = "failed"
    failed = _judged(c, agent, t2["id"])
    assert (failed["status_name"], failed["result"]) == ("Failed", "failed"), failed
    assert failed["message"].startswith("the game server failed")
    assert "trial failed: the game server failed" in failed["error"]
    assert ok(c.get(f"/instances/{crashing['id']}"))["desired"] == "stopped"
    refused = c.post("/images/trial/diffs", json={"update_id": bad["id"]})
    assert refused.status_code == 409
    assert f"did not pass its last trial ({t2['id']}: failed)" in refused.json()["message"]

    # Not required any more: the diff goes ahead.
    ok(c.patch("/images/trial", json={"require_trial": False}))
    ok(c.post("/images/trial/diffs", json={"update_id": bad["id"]}), 201)


def test_a_trial_fails_when_no_host_of_the_fleet_is_alive(server: Any) -> None:
    c = server.client()
    ok(c.post("/images", json={"name": "lonely"}), 201)
    release(c, "lonely", {"game": b"v1"}, "l1", executable=["game"])
    catalogue(c, "tl")
    profile(c, "tl-v1", "tl-game", "lonely", "1")
    ok(
        c.post(
            "/fleets",
            json={
                "name": "tl-build",
                "application": "tl-game",
                "environment": "tl-prod",
                "hosts": ["tl-h1"],
                "instances_per_host": 1,
                "profile": "tl-v1",
            },
        ),
        201,
    )
    upd = _update(c, "lonely", b"v2")
    t = ok(c.post(f"/updates/{upd['id']}/trials", json={"fleet": "tl-build"}), 201)
    failed = wait_job(c, f"/trials/{t['id']}")
    assert failed["result"] == "failed"
    assert failed["message"] == "no host of fleet tl-build is alive with a free slot to run it"
    # Alive, but its one slot runs the fleet's own server: still no room for a trial.
    agent = FakeAgent(server.client(server.token("agent")), "tl-h1", "tl-eu", slots=1)
    agent.register()
    agent.sync(2)
    assert list(agent.desired().values()) == ["running"]
    t2 = ok(c.post(f"/updates/{upd['id']}/trials", json={"fleet": "tl-build"}), 201)
    full = wait_job(c, f"/trials/{t2['id']}")
    assert full["message"] == "no host of fleet tl-build is alive with a free slot to run it"
    assert full["instance_id"] is None
