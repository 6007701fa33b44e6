"""``changeover news`` as a user types it, against a real server: post, list, delete,
automatic release news, and its errors as one line and an exit code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests_helpers import release

pytestmark = pytest.mark.timeout(300)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_post_list_delete_auto(server: Any, tmp_path: Path) -> None:
    ok(server.cli("image", "create", "clinews"))
    out = ok(
        server.cli(
            "news", "post", "live", "--image", "clinews", "--title", "Season 2",
            "--link", "https://game.test/s2",
        )
    )  # fmt: skip
    assert out.strip() == "news entry 1 posted to clinews live"
    body = tmp_path / "body.txt"
    body.write_text("New maps.\n[bold]not markup[/bold]\n")
    ok(
        server.cli(
            "news", "post", "live", "--image", "clinews", "--title", "[red]Patch[/red] <b>",
            "--body-file", str(body),
        )
    )  # fmt: skip
    listed = ok(server.cli("news", "list", "live", "--image", "clinews"))
    # Shown as typed: Rich markup in an entry is text, not styling.
    assert "[red]Patch[/red] <b>" in listed and "Season 2" in listed
    assert listed.index("[red]Patch") < listed.index("Season 2")  # newest first
    rows = json.loads(ok(server.cli("news", "list", "live", "--image", "clinews", "--json")))
    assert rows[0]["body"] == "New maps.\n[bold]not markup[/bold]\n"
    assert rows[1]["link"] == "https://game.test/s2"

    ok(server.cli("news", "delete", "live", "1", "--image", "clinews"))
    rows = json.loads(ok(server.cli("news", "list", "live", "--image", "clinews", "--json")))
    assert [r["id"] for r in rows] == [2]
    feed = httpx.get(f"{server.url}/content/news/clinews/live.xml")
    assert feed.status_code == 200 and b"Season 2" not in feed.content

    out = ok(server.cli("news", "auto", "live", "--image", "clinews"))
    assert out.strip() == "clinews live: automatic release news off"
    out = ok(server.cli("news", "auto", "live", "--image", "clinews", "--on"))
    assert out.strip() == "clinews live: automatic release news on"
    c = server.client()
    release(c, "clinews", {"a": b"1"}, "1.0.0")
    ok(server.cli("branch", "set", "live", "--image", "clinews", "--version", "1.0.0"))
    rows = json.loads(ok(server.cli("news", "list", "live", "--image", "clinews", "--json")))
    assert rows[0]["title"] == "1.0.0 released"


def test_errors_are_one_line_and_an_exit_code(server: Any) -> None:
    ok(server.cli("image", "create", "clierr"))
    bad_link = server.cli(
        "news", "post", "live", "--image", "clierr", "--title", "t", "--link", "javascript:x"
    )
    assert bad_link.returncode == 3, bad_link.stderr
    assert bad_link.stderr.startswith("error: news link 'javascript:x' is not an absolute")
    missing = server.cli("news", "delete", "live", "99", "--image", "clierr")
    assert missing.returncode == 4
    assert missing.stderr.strip() == "error: no news entry 99 in the feed of clierr live"
    nobody = server.cli("news", "list", "live", "--image", "no-such")
    assert nobody.returncode == 4
    viewer = server.token("viewer")
    refused = server.cli("news", "post", "live", "--image", "clierr", "--title", "t", token=viewer)
    assert refused.returncode == 6, refused.stderr
    unreadable = server.cli(
        "news", "post", "live", "--image", "clierr", "--title", "t", "--body-file", "/nonexistent"
    )
    assert unreadable.returncode == 3
    assert "cannot read the body from /nonexistent" in unreadable.stderr
