"""The new-job form's "Preview impact" (issue 24) in real headless Chromium against a real
server and a fleet with players on it: the simulated numbers and the method comparison are
shown in the form, a body ``create`` refuses is refused there in the same words, a fleet
without session history asks for a player model, server text stays text, and nothing is
created until the engineer presses Create (a viewer may preview, not create)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.sync_api import expect

from fleet_helpers import ok
from patchjob_helpers import two_build_fleet
from web_helpers import log_in, screenshot

pytestmark = pytest.mark.timeout(240)
ANSWER_MS = 60_000
"""How long the page may wait for a simulation's answer (a wait, not a time limit)."""

METHODS = ["Forced deployment", "Rolling update", "A/B deployment", "Bleed-off", "Canary"]


def duration(s: float | None) -> str:
    """The page's way of showing a duration (jobform.js ``duration``)."""
    if s is None:
        return "not finished"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 60:.1f} min" if s >= 60 else f"{round(s)} s"


def job_total(c: Any) -> int:
    return int(ok(c.get("/patchjobs?limit=1"))["total"])


def open_form(page: Any, server: Any, token: str) -> None:
    log_in(page, server, token)
    page.click("nav >> text=Patch jobs")
    page.click("text=New job")
    expect(page.locator("#view h1")).to_have_text("New patch job")


def fill_job(page: Any, prefix: str) -> None:
    page.fill("#job-name", f"{prefix} to v2")
    # Naming a known fleet fills its environment, application and current build.
    page.fill("#job-fleets", f"{prefix}-fleet")
    page.dispatch_event("#job-fleets", "change")
    expect(page.locator("#job-env")).to_have_value(f"{prefix}-prod")
    expect(page.locator("#job-app")).to_have_value(f"{prefix}-game")
    expect(page.locator("#job-old")).to_have_value(f"{prefix}-v1")
    page.fill("#job-new", f"{prefix}-v2")


def preview(page: Any) -> Any:
    """Click Preview impact; the request the page sent and the server's answer."""
    with page.expect_response("**/api/v1/patchjobs/simulate", timeout=ANSWER_MS) as r:
        page.click("#preview-impact")
    response = r.value
    return response.request.post_data_json, response.json(), response.status


def test_preview_shows_the_simulation_and_creates_nothing(server: Any, page: Any) -> None:
    c, _agents = two_build_fleet(server, "pv", ["pv-h1", "pv-h2"], per_host=2, regions=("eu", "us"))
    for p in ("ann", "bob", "cat"):
        ok(c.post("/allocations", json={"fleet": "pv-fleet", "players": [p]}), 201)
    before = job_total(c)
    open_form(page, server, server.admin_token)
    fill_job(page, "pv")
    page.select_option("#job-method", label="Bleed-off")
    page.fill("#job-deadline", "1h")
    page.fill("#job-notice", "10m, 1m")
    # Every session lasts 20 minutes, a new player comes about once a minute.
    page.fill("#sim-arrivals", "0.0167")
    page.fill("#sim-session", "20m")
    page.fill("#sim-runs", "3")

    sent, out, status = preview(page)
    assert status == 200, out
    assert sent["compare"] is True and sent["runs"] == 3
    assert sent["players"] == {
        "arrivals_per_s": [0.0167],
        "sessions": [{"share": 1, "median_s": 1200}],
    }
    assert sent["job"]["drain"] == {"deadline_s": 3600, "notice_before_s": [600, 60]}
    assert sent["job"]["method"] == 4 and sent["job"]["fleets"] == ["pv-fleet"]
    assert sent["job"]["builds"] == [{"old": "pv-v1", "new": "pv-v2"}]

    # The numbers on the page are the answer's.
    est, first = out["estimate"], out["estimate"]["first"]
    expect(page.locator("#preview-model")).to_contain_text(
        "explicit player model (0 ended sessions ignored)"
    )
    expect(page.locator("#preview-model")).to_contain_text("the values given in the form")
    expect(page.locator("#preview-summary")).to_contain_text(
        "Bleed-off of 4 instances; 4 live instances, 3 players online now; 3 simulated runs"
    )
    assert est["duration_p50_s"] is not None and first["selected"] == 4
    expect(page.locator("#preview-p50")).to_have_text(duration(est["duration_p50_s"]))
    expect(page.locator("#preview-p90")).to_have_text(duration(est["duration_p90_s"]))
    expect(page.locator("#preview-kicked")).to_have_text(f"{est['kicked_p50']:g}")
    expect(page.locator("#preview-moved")).to_have_text(str(first["moved_after_notice"]))
    expect(page.locator("#preview-surge")).to_have_text(str(first["peak_extra_instances"]))
    reduced = first["reduced_capacity_s"]
    expect(page.locator("#preview-reduced")).to_have_text(duration(reduced) if reduced else "none")
    regions = page.locator("#preview-regions tbody tr")
    expect(regions).to_have_count(2)
    for region, at in first["region_finish_s"].items():
        expect(page.locator("#preview-regions tbody tr", has_text=region)).to_contain_text(
            duration(at)
        )
    # The comparison: every method on the same fleet, the job's own marked.
    rows = page.locator("#preview-methods tbody tr")
    expect(rows).to_have_count(len(METHODS))
    assert [r["method_name"] for r in out["methods"]] == METHODS
    for n, r in enumerate(out["methods"]):
        cells = rows.nth(n).locator("td")
        expect(cells.nth(0)).to_have_text(r["method_name"])
        expect(cells.nth(1)).to_have_text(r["outcome_name"] or "not finished")
        expect(cells.nth(2)).to_have_text(duration(r["duration_s"]))
        expect(cells.nth(3)).to_have_text(str(r["moved_after_notice"]))
        expect(cells.nth(4)).to_have_text(str(r["kicked_at_deadline"] + r["kicked_by_stop"]))
        expect(cells.nth(5)).to_have_text(str(r["peak_extra_instances"]))
    expect(page.locator("#preview-methods tr.chosen")).to_have_text(re.compile("^Bleed-off"))
    # A forced deployment stops the old servers with their players on them.
    forced = out["methods"][0]
    assert forced["kicked_by_stop"] >= 3
    expect(page.locator("#form-error")).to_be_hidden()
    expect(page).to_have_url(f"{server.url}/ui/#/jobs/new")  # the form never left
    screenshot(page, "patchjob-preview")
    assert job_total(c) == before
    # Changing the form marks the preview as answering the form as it was.
    page.fill("#job-deadline", "2h")
    expect(page.locator("#preview-stale")).to_contain_text("The form changed since this preview")
    expect(page.locator("#preview-stale")).to_have_count(1)
    page.fill("#job-deadline", "1h")
    expect(page.locator("#preview-stale")).to_have_count(1)

    # With the form still filled, Create makes the job the preview was of.
    page.click("button:has-text('Create job')")
    expect(page.locator("#view h1")).to_contain_text("Patch job #")
    expect(page.locator("#view h1")).to_contain_text("pv to v2")
    assert job_total(c) == before + 1


def test_preview_refusals_are_shown_in_the_form_to_a_viewer(server: Any, page: Any) -> None:
    c, _agents = two_build_fleet(server, "pr", ["pr-h1"], per_host=1)
    before = job_total(c)
    # A viewer may preview (it changes nothing) and may not create.
    open_form(page, server, server.token("viewer"))
    expect(page.locator("button:has-text('Create job')")).to_be_disabled()
    fill_job(page, "pr")
    page.select_option("#job-method", label="Bleed-off")
    error = page.locator("#form-error")

    # No session history and no player model: the answer says to give one, the form where.
    _sent, out, status = preview(page)
    assert status == 400, out
    expect(error).to_be_visible()
    expect(error).to_contain_text("0 ended sessions")
    expect(error).to_contain_text("Fill in Arrivals per second and Session length")
    expect(page.locator("#preview-methods")).to_have_count(0)
    screenshot(page, "patchjob-preview-no-history")

    # Half a player model is refused before anything is sent.
    page.fill("#sim-arrivals", "0.5")
    page.click("#preview-impact")
    expect(error).to_have_text(
        "Check the form: Give both arrivals per second and a session length, or neither "
        "(the model is then fitted from the fleet's session history)."
    )
    page.fill("#job-old", "pr-v1, pr-v2")
    page.click("#preview-impact")
    expect(error).to_have_text(
        "Check the form: Give as many new builds as old ones (2 old, 1 new)."
    )
    page.fill("#job-old", "pr-v1")
    page.fill("#sim-session", "a while")
    page.click("#preview-impact")
    expect(error).to_contain_text("Session length: give a duration such as 90s, 15m or 12h")
    page.fill("#sim-session", "5m")

    # A body create refuses is refused with create's own words.
    page.select_option("#job-method", label="Rolling update")
    page.fill("#job-max-unavailable", "0")
    page.fill("#job-max-surge", "0")
    sent, out, status = preview(page)
    created = c.post("/patchjobs", json=sent["job"])
    assert (status, out) == (created.status_code, created.json())
    assert "cannot both be 0" in out["message"]
    expect(error).to_have_text(f"Refused: {out['message']}")
    page.fill("#job-max-unavailable", "1")
    page.fill("#job-max-surge", "1")
    # A start sooner than 5 minutes is refused as create refuses it; a later one is
    # simulated from then.
    page.fill("#job-start", "1m")
    sent, out, status = preview(page)
    assert status == 400 and "at least 5 minutes" in out["message"], out
    expect(error).to_have_text(f"Refused: {out['message']}")
    page.fill("#job-start", "2h")
    sent, out, status = preview(page)
    assert status == 200, out
    assert sent["job"]["scheduled_start"] > time.time() + 7000
    assert out["estimate"]["first"]["starts_after_s"] > 7000
    expect(page.locator("#preview-summary")).to_contain_text(
        "it starts in 2.0 h (its scheduled start), on the players there will be by then"
    )
    page.fill("#job-start", "")
    # A good preview after a refusal clears it.
    _sent, out, status = preview(page)
    assert status == 200, out
    expect(error).to_be_hidden()
    expect(page.locator("#preview-methods tbody tr")).to_have_count(len(METHODS))
    expect(page.locator("#preview-stale")).to_have_count(0)

    # Server text is shown as text: markup in an echoed name is not made into elements.
    page.fill("#job-env", '<img id="injected" src="x">')
    _sent, out, status = preview(page)
    assert status == 404, out
    expect(error).to_contain_text('<img id="injected" src="x">')
    expect(page.locator("#injected")).to_have_count(0)
    assert job_total(c) == before
