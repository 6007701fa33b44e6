"""News per image branch against a real server, on SQLite and PostgreSQL: an admin posts,
lists and deletes entries; a branch move posts "<label> released" where asked; the feed
under ``/content/news/`` is valid Atom, follows every change, and shows hostile text as
text."""

from __future__ import annotations

import http.server
import json
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import feedparser
import httpx
import pytest

from fleet_helpers import ok
from tests_helpers import release, start_server, stop_server

pytestmark = pytest.mark.timeout(120)

A = "{http://www.w3.org/2005/Atom}"
HOSTILE = '<script>alert("x")</script> & <![CDATA[ ]]> &amp; <b onload=x>'


def feed(server: Any, image: str, branch: str) -> tuple[httpx.Response, ET.Element]:
    r = httpx.get(f"{server.url}/content/news/{image}/{branch}.xml")
    assert r.status_code == 200, r.text
    return r, ET.fromstring(r.content)


def assert_valid_atom(root: ET.Element, data: bytes) -> None:
    """What RFC 4287 requires of a feed and its entries, and what a feed reader sees."""
    assert root.tag == f"{A}feed"
    for el in (root, *root.findall(f"{A}entry")):
        for tag in ("id", "title", "updated"):
            assert len(el.findall(f"{A}{tag}")) == 1, (el.tag, tag)
        assert el.findtext(f"{A}id", "").startswith("urn:uuid:")
    assert root.find(f"{A}author/{A}name") is not None  # counts for every entry
    parsed = feedparser.parse(data)
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.version == "atom10"


def test_post_list_delete_and_the_feed(server: Any) -> None:
    c = server.client()
    ok(c.post("/images", json={"name": "newsy"}), 201)
    first = ok(
        c.post(
            "/images/newsy/news/live",
            json={
                "title": "Season 2",
                "body": "New maps.\nNew modes.",
                "link": "https://x.test/s2",
            },
        ),
        201,
    )
    assert first["title"] == "Season 2"
    assert first["version_id"] is None
    second = ok(c.post("/images/newsy/news/live", json={"title": HOSTILE, "body": HOSTILE}), 201)
    listed = ok(c.get("/images/newsy/news/live"))
    assert [e["id"] for e in listed] == [second["id"], first["id"]]  # newest first
    assert ok(c.get("/images/newsy/news/live", params={"limit": 1})) == [second]
    assert ok(c.get("/images/newsy/news/other")) == []  # feeds are per branch

    r, root = feed(server, "newsy", "live")
    assert r.headers["cache-control"] == "no-cache"  # changes in place, like the metadata
    assert_valid_atom(root, r.content)
    entries = root.findall(f"{A}entry")
    assert [e.findtext(f"{A}title") for e in entries] == [HOSTILE, "Season 2"]
    # Hostile text is text: escaped in the bytes, no element of its making.
    assert b"<script" not in r.content and b"<b onload" not in r.content
    assert b"&lt;script&gt;" in r.content
    assert all("script" not in el.tag for el in root.iter())
    assert entries[0].find(f"{A}content").get("type") == "text"
    assert entries[1].find(f"{A}link").get("href") == "https://x.test/s2"
    assert entries[1].findtext(f"{A}content") == "New maps.\nNew modes."

    # Deleting rewrites the feed at once.
    assert ok(c.delete(f"/images/newsy/news/live/{second['id']}")) == {"deleted": second["id"]}
    _, root = feed(server, "newsy", "live")
    assert [e.findtext(f"{A}title") for e in root.findall(f"{A}entry")] == ["Season 2"]
    assert ok(c.get("/images/newsy/news/live")) == [first]
    again = c.delete(f"/images/newsy/news/live/{second['id']}")
    assert again.status_code == 404 and again.json()["error"] == "not_found"
    # An entry is deleted from its own feed only.
    wrong = c.delete(f"/images/newsy/news/beta/{first['id']}")
    assert wrong.status_code == 404
    # The last entry gone, the feed is gone too.
    ok(c.delete(f"/images/newsy/news/live/{first['id']}"))
    assert httpx.get(f"{server.url}/content/news/newsy/live.xml").status_code == 404


def test_bad_input_is_refused_and_nothing_is_stored(server: Any) -> None:
    c = server.client()
    ok(c.post("/images", json={"name": "badnews"}), 201)
    url = "/images/badnews/news/live"
    for body, status in (
        ({"title": ""}, 422),
        ({"title": "   "}, 400),
        ({"title": "x" * 201}, 422),
        ({"title": "t", "body": "b" * 10_001}, 422),
        ({"title": "two\nlines"}, 400),
        ({"title": "nul\x00"}, 400),
        ({"title": "bell\x07"}, 400),
        ({"title": "t", "body": "escape \x1b[31m"}, 400),
        ({"title": "t", "link": "javascript:alert(1)"}, 400),
        ({"title": "t", "link": "data:text/html,<script>"}, 400),
        ({"title": "t", "link": "/relative"}, 400),
        ({"title": "t", "link": "https://x.test/a b"}, 400),
        ({"title": "t", "link": "http://[oops/"}, 400),
        ({"title": "t", "link": "http://:80/"}, 400),
        ({"title": "t", "extra": 1}, 422),
    ):
        r = c.post(url, json=body)
        assert r.status_code == status, (body, r.status_code, r.text)
        assert r.json()["error"] == "invalid_input", r.text
    r = c.post("/images/badnews/news/Not%20A%20Branch", json={"title": "t"})
    assert r.status_code == 400, r.text
    r = c.post("/images/no-such-image/news/live", json={"title": "t"})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert ok(c.get(url)) == []
    assert httpx.get(f"{server.url}/content/news/badnews/live.xml").status_code == 404
    # Readers read; only an admin posts, deletes or switches automatic news.
    viewer = server.client(server.token("viewer"))
    assert viewer.get(url).status_code == 200
    assert viewer.post(url, json={"title": "t"}).status_code == 403
    assert viewer.delete(url + "/1").status_code == 403
    assert viewer.put(url + "/auto", json={"enabled": True}).status_code == 403
    assert httpx.get(f"{server.url}/api/v1{url}").status_code == 401


def test_a_branch_move_posts_its_release_where_asked(server: Any) -> None:
    c = server.client()
    ok(c.post("/images", json={"name": "rel"}), 201)
    release(c, "rel", {"a": b"one"}, "1.1.0")
    release(c, "rel", {"a": b"two"}, None)
    assert ok(c.get("/images/rel/news/live/auto")) == {
        "image": "rel",
        "branch": "live",
        "enabled": False,
    }
    ok(c.put("/images/rel/branches/live", json={"version": "1"}))
    assert ok(c.get("/images/rel/news/live")) == []  # off by default

    assert ok(c.put("/images/rel/news/live/auto", json={"enabled": True}))["enabled"] is True
    # Switched on with nothing posted yet: the feed exists, empty and valid.
    r, root = feed(server, "rel", "live")
    assert_valid_atom(root, r.content)
    assert root.findall(f"{A}entry") == []

    ok(c.put("/images/rel/branches/live", json={"version": "2"}))
    ok(c.put("/images/rel/branches/live", json={"version": "2"}))  # not a move: no entry
    ok(c.put("/images/rel/branches/live", json={"version": "1.1.0"}))
    ok(c.put("/images/rel/branches/beta", json={"version": "2"}))  # its feed is not on
    entries = ok(c.get("/images/rel/news/live"))
    assert [e["title"] for e in entries] == ["1.1.0 released", "version 2 released"]
    assert [e["version_id"] is not None for e in entries] == [True, True]
    assert entries[0]["body"] == "rel live is now 1.1.0."
    assert ok(c.get("/images/rel/news/beta")) == []
    _, root = feed(server, "rel", "live")
    titles = [e.findtext(f"{A}title") for e in root.findall(f"{A}entry")]
    assert titles == ["1.1.0 released", "version 2 released"]

    ok(c.put("/images/rel/news/live/auto", json={"enabled": False}))
    ok(c.put("/images/rel/branches/live", json={"version": "2"}))
    assert len(ok(c.get("/images/rel/news/live"))) == 2


def test_a_rewritten_feed_is_purged_and_an_unchanged_one_is_not(tmp_path: Path) -> None:
    purged: list[list[str]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            purged.append(json.loads(body)["paths"])
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    purge_url = f"http://127.0.0.1:{hook.server_address[1]}/purge"
    srv = start_server(tmp_path, None, env={"CHANGEOVER_CDN_PURGE_URL": purge_url})
    try:
        c = srv.client()
        ok(c.post("/images", json={"name": "cdn"}), 201)
        entry = ok(c.post("/images/cdn/news/live", json={"title": "one"}), 201)
        # The purge is sent before the answer (the publisher runs in the request).
        assert purged == [["content/news/cdn/live.xml"]]
        ok(c.put("/images/cdn/news/live/auto", json={"enabled": False}))  # same bytes
        assert purged == [["content/news/cdn/live.xml"]]
        ok(c.delete(f"/images/cdn/news/live/{entry['id']}"))
        assert purged[-1] == ["content/news/cdn/live.xml"]
        assert len(purged) == 2
    finally:
        stop_server(srv)
        hook.shutdown()
        hook.server_close()


def test_a_feed_keeps_its_newest_entries(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from changeover.control.builds.services import create_image
    from changeover.control.news import services

    monkeypatch.setattr(services, "ENTRIES_MAX", 5)
    with db.write() as s:
        image = create_image(s, "capped")
        for i in range(8):
            services.post_entry(s, image, "live", f"n{i}", "", None, "test")
        services.post_entry(s, image, "beta", "other feed", "", None, "test")
    with db.read() as s:
        kept = services.list_entries(s, image, "live", 100)
        assert [e.title for e in kept] == ["n7", "n6", "n5", "n4", "n3"]
        assert len(services.list_entries(s, image, "beta", 100)) == 1
