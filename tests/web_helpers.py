"""Helpers for the browser tests (imported as ``web_helpers``): log-in and screenshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect

SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


def log_in(page: Any, server: Any, token: str) -> None:
    """Open the dashboard at ``/`` (it redirects to /ui/) and log in with ``token``."""
    page.goto(server.url + "/")
    page.fill("#token", token)
    page.click("form button[type=submit]")
    expect(page.locator("#view h1")).to_have_text("Images")


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as docs/screenshots/<name>.png (the README shows them)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
