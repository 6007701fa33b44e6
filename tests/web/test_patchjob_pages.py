"""Patch-job pages in real headless Chromium: a job advancing live (no reload), an operator
resuming a paused canary and cancelling a job, and a viewer refused the cancel."""

from __future__ import annotations

import shlex
import sys
from typing import Any

import pytest
from playwright.sync_api import expect

from fleet_helpers import ok
from patchjob_helpers import job_body, running, two_build_fleet, wait_done, wait_status
from web_helpers import log_in, screenshot

pytestmark = pytest.mark.timeout(240)
JOB_WAIT_MS = 60_000


SERVER_ENV = {"CHANGEOVER_PATCH_TICK_S": "0.1"}
"""The reconciler looks at jobs every 0.1 s in these servers (0.5 s by default)."""


def watch_statuses(page: Any) -> None:
    """Record every status the page shows, to prove it changed in place (no reload)."""
    page.evaluate(
        """() => {
          window.seenStatuses = [document.querySelector('#job-status').textContent];
          new MutationObserver(() => {
            const s = document.querySelector('#job-status');
            if (s && window.seenStatuses.at(-1) !== s.textContent)
              window.seenStatuses.push(s.textContent);
          }).observe(document.querySelector('#view'), {subtree: true, childList: true});
        }"""
    )


def test_watch_a_job_advance_live(server: Any, page: Any) -> None:
    c, agents = two_build_fleet(server, "wl", ["wl-h1", "wl-h2"], per_host=2)
    for a in agents:
        a.report_exits = True
    body = job_body("wl", "rolling")
    job = ok(c.post("/patchjobs", json=body), 201)
    log_in(page, server, server.admin_token)
    page.click("nav >> text=Patch jobs")
    page.click(f"text=#{job['id']}")
    expect(page.locator("#view h1")).to_contain_text(f"Patch job #{job['id']}")
    expect(page.locator("#live")).to_have_text("● live")
    expect(page.locator("#timeline li[data-kind=created]")).to_have_count(1)
    watch_statuses(page)
    # The job cannot move until the agents sync; from here it runs while the page watches.
    with running(agents) as bg:
        expect(page.locator("#job-status")).to_have_text("Completed", timeout=JOB_WAIT_MS)
        wait_done(c, job["id"], bg)
    expect(page.locator("#job-progress")).to_contain_text("4 / 4 instances on the new build")
    expect(page.locator("#timeline li[data-kind=finished]")).to_have_count(1)
    expect(page.locator("#live")).to_have_text("finished")
    seen = page.evaluate("window.seenStatuses")  # still defined: the page never reloaded
    assert seen[-1] == "Completed" and len(seen) >= 2, seen
    events = ok(c.get(f"/patchjobs/{job['id']}/events"))["events"]
    expect(page.locator("#timeline li")).to_have_count(len(events))
    # Each instance of the job, with its replacement and how the old one's process ended.
    rows = page.locator("#job-instances tbody tr")
    expect(rows).to_have_count(4)
    for n in range(4):
        expect(rows.nth(n)).to_contain_text("wl-v2 ready")
        expect(rows.nth(n)).to_contain_text("exited by itself with code 0 after it was asked")
    screenshot(page, "patchjob-live")


def test_resume_a_paused_canary_and_cancel_a_job(server: Any, page: Any, browser: Any) -> None:
    c, agents = two_build_fleet(server, "op", ["op-h1"], per_host=2)
    c2, agents2 = two_build_fleet(server, "oq", ["oq-h1"], per_host=1)
    canary = job_body(
        "op", "canary", canary={"share": 0.5, "analysis_window_s": 0.2, "auto_promote": False}
    )
    slow = shlex.join([sys.executable, "-c", "import time; time.sleep(120)"])
    held = job_body("oq", "ab", ab={"verify_command": slow})
    with running(agents + agents2) as bg:
        paused = ok(c.post("/patchjobs", json=canary), 201)
        wait_status(c, paused["id"], {5}, bg)
        log_in(page, server, server.admin_token)
        page.goto(f"{server.url}/ui/#/jobs/{paused['id']}")
        expect(page.locator("#job-status")).to_have_text("Paused")
        page.click("button:has-text('Resume')")
        expect(page.locator("#job-status")).to_have_text("Completed", timeout=JOB_WAIT_MS)
        expect(page.locator("#timeline li[data-kind=resume]")).to_have_count(1)

        job = ok(c2.post("/patchjobs", json=held), 201)
        page.goto(f"{server.url}/ui/#/jobs/{job['id']}")
        expect(page.locator("#job-phase")).to_have_text("verify", timeout=JOB_WAIT_MS)

        # A viewer watching the same job sees everything, and may not cancel it.
        viewer = browser.new_context()
        vpage = viewer.new_page()
        log_in(vpage, server, server.token("viewer"))
        vpage.goto(f"{server.url}/ui/#/jobs/{job['id']}")
        cancel = vpage.locator("button:has-text('Cancel and revert')")
        expect(cancel).to_be_disabled()
        vpage.on("dialog", lambda d: d.accept())
        # Enabled and clicked in one step: a live update of the page disables it again.
        cancel.evaluate("b => { b.disabled = false; b.click(); }")
        expect(vpage.locator("#error")).to_contain_text("403 forbidden")
        screenshot(vpage, "patchjob-viewer-denied")
        viewer.close()
        assert ok(c.get(f"/patchjobs/{job['id']}"))["cancel"] is None

        page.on("dialog", lambda d: d.accept())
        page.click("button:has-text('Cancel and revert')")
        expect(page.locator("#job-status")).to_have_text("Cancelled", timeout=JOB_WAIT_MS)
        expect(page.locator("#timeline li[data-kind=cancel]")).to_have_count(1)
        done = wait_done(c, job["id"], bg)
    assert "reverted" in done["reason"]
    expect(page.locator("#live")).to_have_text("finished")
    screenshot(page, "patchjob-cancelled")
    page.goto(f"{server.url}/ui/#/jobs")
    expect(page.locator("#view table tbody tr")).to_have_count(ok(c.get("/patchjobs"))["total"])
