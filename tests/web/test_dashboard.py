"""The dashboard in real headless Chromium against a real server: log-in, images, fleets,
the players chart, and a viewer refused an action (button disabled, and the API's 403)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from fleet_helpers import FakeAgent, catalogue, ok, profile, release
from tests_helpers import wait_for
from web_helpers import log_in, screenshot

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def world(server: Any) -> dict[str, Any]:
    """Image ``arena`` with two versions and a branch; fleet ``ui-fleet`` over two regions,
    half moved to version 2 (so instances differ by version and state); a few players."""
    c = server.client()
    ok(c.post("/images", json={"name": "arena"}), 201)
    release(c, "arena", {"bin/game": b"v1" * 1000, "data/map": b"m" * 5000}, "1.0")
    v2 = release(c, "arena", {"bin/game": b"v2" * 1000, "data/map": b"m" * 5000}, "2.0")
    ok(c.put("/images/arena/branches/production", json={"version": "1.0"}))
    catalogue(c, "ui", regions=("eu", "us"))
    profile(c, "ui-v1", "ui-game", "arena", "1.0", capacity=4)
    profile(c, "ui-v2", "ui-game", "arena", "2.0", capacity=4)
    agent_token = server.token("agent")
    agents = [
        FakeAgent(server.client(agent_token), "ui-h1", "ui-eu"),
        FakeAgent(server.client(agent_token), "ui-h2", "ui-us"),
    ]
    ok(
        c.post(
            "/fleets",
            json={
                "name": "ui-fleet",
                "application": "ui-game",
                "environment": "ui-prod",
                "hosts": ["ui-h1", "ui-h2"],
                "instances_per_host": 3,
                "profile": "ui-v1",
            },
        ),
        201,
    )
    for a in agents:
        a.register()
        a.sync(2)
    for p in ("ann", "bob", "cy"):
        ok(c.post("/allocations", json={"fleet": "ui-fleet", "players": [p]}), 201)
    sw = ok(c.post("/fleets/ui-fleet/switch", json={"profile": "ui-v2", "drain_s": 3600}), 201)

    def switched() -> bool:
        for a in agents:
            a.sync()
        return ok(c.get(f"/switches/{sw['id']}"))["status"] in (5, 6)

    wait_for(switched, 60, "the profile switch to finish")
    ok(c.post("/allocations", json={"fleet": "ui-fleet", "players": ["dee"]}), 201)
    return {"v2": v2, "viewer": server.token("viewer")}


def test_root_redirects_and_bad_tokens_are_refused(server: Any, page: Any) -> None:
    r = httpx.get(server.url + "/", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (307, "/ui/")
    page.goto(server.url + "/")
    expect(page).to_have_url(re.compile(r"/ui/#?/?(login)?$"))
    page.fill("#token", "cho_1_not-the-right-secret-at-all-0000")
    page.click("form button[type=submit]")
    expect(page.locator("#error")).to_contain_text("401")
    expect(page.locator("#error")).to_contain_text("not recognised")
    page.fill("#token", "garbage")
    page.click("form button[type=submit]")
    expect(page.locator("#error")).to_contain_text("malformed access token")
    expect(page.locator("#nav")).to_be_hidden()


def test_admin_sees_images_versions_diffs_and_branches(
    server: Any, page: Any, world: dict[str, Any]
) -> None:
    log_in(page, server, server.admin_token)
    expect(page.locator("#who")).to_contain_text("admin")
    page.click("text=arena")
    expect(page.locator("#view h1")).to_have_text("Image arena")
    versions = page.locator("table").nth(0)
    expect(versions.locator("tbody tr")).to_have_count(2)
    expect(versions).to_contain_text("2.0")
    expect(page.locator("table").nth(1)).to_contain_text("production")
    screenshot(page, "image")
    # The diff analysis behind version 2: per-file changes and bytes.
    page.click(f"text=diff {world['v2']['diff_id']}")
    expect(page.locator("#view h1")).to_contain_text(f"Diff analysis {world['v2']['diff_id']}")
    expect(page.locator("#view")).to_contain_text("bin/game")
    expect(page.locator("#download-bytes")).not_to_be_empty()
    # An admin moves a branch from the page; the table shows the new pointer.
    page.go_back()
    page.fill("#branch-name", "staging")
    page.fill("#branch-version", "2.0")
    page.click("button:has-text('Set branch')")
    expect(page.locator("table").nth(1)).to_contain_text("staging")
    expect(page.locator("#error")).to_be_hidden()


def test_fleet_page_colours_instances_by_version_and_state(
    server: Any, page: Any, world: dict[str, Any]
) -> None:
    log_in(page, server, server.admin_token)
    page.click("nav >> text=Fleets")
    page.click("text=ui-fleet")
    expect(page.locator("#view h1")).to_have_text("Fleet ui-fleet")
    summary = ok(server.client().get("/fleets/ui-fleet/summary"))
    expect(page.locator("#fleet-total")).to_have_text(str(summary["instances"]))
    # One bar per region; one segment per (version, state) group, coloured by version.
    for region in summary["regions"]:
        bar = page.locator(f".bar[data-region='{region['region']}'] span")
        expect(bar).to_have_count(len(region["groups"]))
    colours = page.locator(".dots span").evaluate_all(
        "els => [...new Set(els.map(e => e.style.backgroundColor))]"
    )
    assert len(colours) == 2, colours  # old instances still draining, new ones running
    states = page.locator(".dots span").evaluate_all("els => els.map(e => e.className)")
    assert "st-draining" in states and "st-ready" in states, states
    expect(page.locator("#page-info")).to_have_text(
        f"1\u2013{summary['instances']} of {summary['instances']}"
    )
    page.select_option("select >> nth=1", "draining")
    expect(page.locator("#page-info")).to_contain_text("of ")
    draining = sum(
        g["instances"] for r in summary["regions"] for g in r["groups"] if g["state"] == "draining"
    )
    expect(page.locator("#page-info")).to_have_text(f"1\u2013{draining} of {draining}")
    expect(page.locator("svg.chart[data-series=players] polyline")).to_have_count(2)
    screenshot(page, "fleet")


def test_players_chart(server: Any, page: Any, world: dict[str, Any]) -> None:
    log_in(page, server, world["viewer"])
    page.click("nav >> text=Players")
    expect(page.locator("svg.chart[data-series=allocations]")).to_be_visible()
    expect(page.locator("svg.chart[data-series=players] polyline")).to_have_count(2)
    expect(page.locator("#view")).to_contain_text("Allocations per 2 minutes")
    page.select_option("#window", "86400")
    expect(page.locator("#view")).to_contain_text("Allocations per 48 minutes")
    expect(page.locator("svg.chart[data-series=players] polyline")).to_have_count(2)
    screenshot(page, "players")


def test_viewer_sees_everything_but_is_refused_an_action(
    server: Any, page: Any, world: dict[str, Any]
) -> None:
    log_in(page, server, world["viewer"])
    expect(page.locator("#who")).to_contain_text("viewer")
    page.click("text=arena")
    button = page.locator("button:has-text('Set branch')")
    expect(button).to_be_disabled()
    expect(button).to_have_attribute("title", "needs a token that may admin")
    # A tampered page (the button forced on) meets the API's refusal, shown to the user.
    page.fill("#branch-name", "production")
    page.fill("#branch-version", "2.0")
    button.evaluate("b => { b.disabled = false; }")
    button.click()
    expect(page.locator("#error")).to_contain_text("403 forbidden")
    expect(page.locator("#error")).to_contain_text("may not admin")
    screenshot(page, "viewer-denied")
    branch = ok(server.client().get("/images/arena/branches"))
    assert {b["name"]: b["version"] for b in branch}["production"] == 1  # nothing moved
