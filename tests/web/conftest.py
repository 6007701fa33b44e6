"""Browser fixtures: Debian's Chromium, driven headless by Playwright (no downloaded browser).

``make test`` installs Chromium from apt when ``/usr/bin/chromium`` is missing. A missing
browser goes through ``gates.unavailable``: a failure under CI, a skip with the reason
elsewhere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gates import unavailable

CHROMIUM = os.environ.get("CHANGEOVER_TEST_CHROMIUM", "/usr/bin/chromium")

# Playwright's expect() waits 5 s by default, apart from the context's timeout: under a full
# parallel run Swagger UI once took longer than that to render the schema (CI saw "loading").
WAIT_MS = 20_000


# Module scope, not session: Playwright's sync API keeps an event loop running on this
# thread while it is open, and later tests in the same worker call asyncio.run().
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        unavailable("chromium", f"nothing at {CHROMIUM}: apt-get install chromium (make test does)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # Root in a container has no user namespaces for the sandbox; /dev/shm is small.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (its own sessionStorage) and page, 1280x900."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
    finally:
        context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"
