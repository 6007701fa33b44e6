"""Helpers for the browser tests (imported as ``web_helpers``): log-in and screenshots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

SCREENSHOTS_ENV = "CHANGEOVER_SCREENSHOTS"
"""A directory to save the tests' screenshots in; unset (a plain test run), none are taken.
``make screenshots`` sets it to docs/screenshots, the tracked copies the README shows."""


def log_in(page: Any, server: Any, token: str) -> None:
    """Open the dashboard at ``/`` (it redirects to /ui/) and log in with ``token``."""
    page.goto(server.url + "/")
    page.fill("#token", token)
    page.click("form button[type=submit]")
    expect(page.locator("#view h1")).to_have_text("Images")


def screenshot(page: Any, name: str) -> Path | None:
    """Save a full-page screenshot as <name>.png in ``$CHANGEOVER_SCREENSHOTS``, if set."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder) / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
