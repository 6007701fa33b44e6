"""The API documentation works offline: ``/docs`` (Swagger UI) renders every operation in a
real headless Chromium that may reach nothing but the control plane."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tests_helpers import Server, start_server, stop_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The pages are the same whatever the database: one server on SQLite."""
    data = tmp_path_factory.mktemp("docs-server")
    srv = start_server(data, None)
    try:
        yield srv
    finally:
        stop_server(srv)
        shutil.rmtree(data, ignore_errors=True)


def offline(page: Any) -> list[str]:
    """Abort every request that leaves 127.0.0.1 (a CDN, fonts, a validator); returns the
    list of what was refused, filled as the page runs."""
    refused: list[str] = []

    def route(r: Any) -> None:
        if urlsplit(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    page.context.route("**/*", route)
    return refused


def test_swagger_ui_renders_the_operations_offline(page: Any, docs_server: Server) -> None:
    refused = offline(page)
    page.goto(docs_server.url + "/docs")
    paths = page.locator(".opblock-summary-path")
    expect(paths.first).to_be_visible()
    expect(paths.filter(has_text="/api/v1/allocations").first).to_be_visible()
    # Every operation of the schema is on the page.
    spec = httpx.get(docs_server.url + "/openapi.json", timeout=30).json()
    assert paths.count() == sum(len(ops) for ops in spec["paths"].values())
    assert refused == []


def test_redoc_is_not_served(docs_server: Server) -> None:
    """ReDoc would fetch from its CDN; /docs is the one page, and it works offline."""
    assert httpx.get(docs_server.url + "/redoc", timeout=30).status_code == 404
