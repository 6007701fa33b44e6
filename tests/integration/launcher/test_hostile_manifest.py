"""Validly signed but hostile manifests (a buggy or compromised publisher), served by a
plain static server: the launcher refuses each before writing anything into DIR."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from changeover.content.patch_index import PatchIndex
from changeover.content.trust import TrustRepo
from tests_helpers import run_cli

pytestmark = pytest.mark.timeout(120)


class Simulator:
    """Publishes whatever it is told to, signed, into a content tree."""

    def __init__(self, root: Path) -> None:
        self.content = root / "content"
        self.repo = TrustRepo(self.content, root / "keys")

    def publish(self, files: list[dict[str, Any]], blobs: dict[str, bytes]) -> None:
        manifest = json.dumps(
            {"format": "changeover.manifest/1", "files": files},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        mid = hashlib.sha256(manifest).hexdigest()
        sizes = {}
        for sha, data in blobs.items():
            packed = zstandard.ZstdCompressor().compress(data)
            path = self.content / "blobs" / sha[:2] / sha
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(packed)
            sizes[sha] = len(packed)
        delivery = {
            "format": "changeover.delivery/1",
            "manifest": mid,
            "blobs": sizes,
            "patches": PatchIndex(mid, {}).to_dict(),
        }
        pointer = {"image": "game", "branch": "live", "version": 1, "label": None, "manifest": mid}
        self.repo.publish(
            {
                "branches/game/live.json": json.dumps(pointer).encode(),
                f"manifests/{mid}.json": manifest,
                f"delivery/{mid}.json": json.dumps(delivery).encode(),
            }
        )


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[tuple[Simulator, str]]:
    sim = Simulator(tmp_path / "repo")
    sim.repo.ensure_initialised()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(sim.content))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield sim, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def entry(path: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "path": path,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "mode": 420,
        **extra,
    }


GOOD = b"fine content"
SHA = hashlib.sha256(GOOD).hexdigest()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([entry("../escape", GOOD)], "component '..'"),
        ([entry("/etc/passwd", GOOD)], "absolute path"),
        ([entry("ok", GOOD), entry("ok", GOOD)], "duplicate path"),
        ([{**entry("lnk", b""), "link": "../../outside"}], "outside the build"),
        ([{**entry("lnk", b""), "link": "/etc"}], "outside the build"),
        ([entry("a", GOOD), entry("a/b", GOOD)], "both a file and a directory"),
    ],
)
def test_unsafe_manifests_are_refused(
    simulator: tuple[Simulator, str], tmp_path: Path, files: list[dict[str, Any]], message: str
) -> None:
    sim, url = simulator
    sim.publish(files, {SHA: GOOD})
    target = tmp_path / "game"
    r = run_cli("launcher", "sync", url, str(target), "--image", "game", "--branch", "live")
    assert r.returncode == 3, r.stderr
    assert message in r.stderr
    assert not os.path.lexists(target)
    assert not (tmp_path / "escape").exists()


def test_a_size_that_lies_is_refused(simulator: tuple[Simulator, str], tmp_path: Path) -> None:
    sim, url = simulator
    lying = {**entry("data.bin", GOOD), "size": 4}
    sim.publish([lying], {SHA: GOOD})
    target = tmp_path / "game"
    r = run_cli("launcher", "sync", url, str(target), "--image", "game", "--branch", "live")
    assert r.returncode == 7, r.stderr
    assert "longer than 4 bytes" in r.stderr
    assert not os.path.lexists(target)
