"""A content URL the server answers with 404 is a wrong address (the studio's config),
not being offline; only a server that cannot be reached is offline."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from changeover.errors import RemoteError
from changeover.launcher.engine import Engine

from .conftest import Published

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned-root", "first-use"])
def test_a_404_names_the_url_and_keeps_its_status(
    published: Published, tmp_path: Path, pinned: bool
) -> None:
    root = httpx.get(published.content_url + "/metadata/1.root.json").content if pinned else None
    wrong = published.server.url + "/no-such-content"
    engine = Engine(wrong, tmp_path / "game", "game", root=root)
    with pytest.raises(RemoteError) as caught:
        engine.check()
    error = caught.value
    print(error.facts, error)
    assert error.facts.get("status") == 404, error.facts
    assert "not found at " + wrong in str(error), str(error)


def test_a_server_that_cannot_be_reached_has_no_status(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = Engine(f"http://127.0.0.1:{port}/content", tmp_path / "game", "game", timeout_s=2)
    with pytest.raises(RemoteError) as caught:
        engine.check()
    assert "status" not in caught.value.facts, caught.value.facts
