"""Signed branch pointers and manifests, as a launcher sees them, and the CDN purge hook."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from changeover.launcher.trust import TrustedTargets
from tests_helpers import release, start_server, stop_server, wait_for

pytestmark = pytest.mark.timeout(120)


def test_branch_pointer_and_manifest_are_signed_targets(server: Any, tmp_path: Path) -> None:
    c = server.client()
    c.post("/images", json={"name": "signed"})
    v1 = release(c, "signed", {"a": b"one"}, "v1")
    v2 = release(c, "signed", {"a": b"two"}, "v2")
    r = c.put("/images/signed/branches/production", json={"version": "1"})
    assert r.status_code == 200, r.text

    trusted = TrustedTargets(server.url + "/content", tmp_path / "cache")
    pointer = json.loads(trusted.fetch("branches/signed/production.json"))
    assert pointer == {
        "image": "signed",
        "branch": "production",
        "version": 1,
        "label": "v1",
        "manifest": v1["manifest_id"],
    }
    manifest = json.loads(trusted.fetch(f"manifests/{v1['manifest_id']}.json"))
    assert [f["path"] for f in manifest["files"]] == ["a"]

    c.put("/images/signed/branches/production", json={"version": "2"})
    # The API answers only once the new pointer is signed and published.
    moved = TrustedTargets(server.url + "/content", tmp_path / "cache")
    assert (
        json.loads(moved.fetch("branches/signed/production.json"))["manifest"] == v2["manifest_id"]
    )


def test_publish_calls_the_cdn_purge_hook(tmp_path: Path) -> None:
    purged: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            purged.append(json.loads(body))
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
        c.post("/images", json={"name": "cdn"})
        release(c, "cdn", {"a": b"x"}, "v1")
        purged.clear()
        c.put("/images/cdn/branches/live", json={"version": "1"})
        wait_for(lambda: purged, 10, "the purge hook to be called")
        # Only the one file that changes in place; everything else is hash-named.
        assert purged[0] == {"paths": ["content/metadata/timestamp.json"]}
    finally:
        stop_server(srv)
        hook.shutdown()
        hook.server_close()
