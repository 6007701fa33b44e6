"""The launcher against a real control plane and a plain static server: install, update,
side-by-side branches, verify and repair, bandwidth limit, bad input."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from changeover.content.patch_index import EMPTY_SHA256, PatchIndex
from changeover.launcher.engine import Engine
from tests_helpers import release, run_cli

from .conftest import Published, elf_library, expected, on_disk

pytestmark = pytest.mark.timeout(180)


def sync(content_url: str, target: Path, branch: str, *extra: str) -> dict[str, Any]:
    r = run_cli(
        "launcher",
        "sync",
        content_url,
        str(target),
        "--image",
        "game",
        "--branch",
        branch,
        "--json",
        *extra,
    )
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def test_install_update_and_remove_stale_files(published: Published, tmp_path: Path) -> None:
    published.point("production", 1)
    target = tmp_path / "games" / "arena"
    first = sync(published.content_url, target, "production")
    assert on_disk(target) == expected(published.versions[0])
    assert first["version"] == 1
    full = first["downloaded_bytes"]

    published.point("production", 2)
    second = sync(published.content_url, target, "production")
    assert on_disk(target) == expected(published.versions[1])
    assert not (target / "data/asset01.bin").exists()  # removed in v2
    # Only new contents were fetched: far less than the whole build.
    assert 0 < second["downloaded_bytes"] < full / 2
    held = set(expected(published.versions[0]).values())
    new = set(expected(published.versions[1]).values())
    assert second["reused_objects"] == len(new & held)
    assert second["fetched_blobs"] + second["applied_patches"] == len(new - held)
    # The executable changed by a small insertion: a patch, not its 600 kB blob.
    assert second["applied_patches"] >= 1
    v1, v2 = published.versions[0], published.versions[1]
    new_assets = sum(len(b) for p, b in v2.items() if v1.get(p) != b and p != "bin/game")
    assert second["downloaded_bytes"] < new_assets + 20_000
    # v2's diff analysis counted whole files (all it could before the patches existed);
    # once v2 was published it recorded what a host on v1 really fetches: exactly this.
    report = published.server.client().get("/diffs/2").json()["report"]
    assert report["base_version"] == 1
    assert report["published_download_bytes"] == second["downloaded_bytes"]
    assert report["download_bytes"] > second["downloaded_bytes"]  # the executable's patch

    again = sync(published.content_url, target, "production")
    assert again["already_current"] is True
    assert again["downloaded_bytes"] == 0


def test_a_changed_library_comes_as_an_hdiffpatch_patch(
    published: Published, tmp_path: Path
) -> None:
    c = published.server.client()
    assert c.post("/images", json={"name": "engine"}).status_code == 201
    old, new = elf_library(20, 400_000)
    v1 = {"lib/libengine.so": old, "readme.txt": b"engine\n"}
    v2 = {"lib/libengine.so": new, "readme.txt": b"engine\n"}
    release(c, "engine", v1, "1.0")
    second = release(c, "engine", v2, "1.1")
    store = published.server.data / "store" / "content" / "patches" / "index"
    index = PatchIndex.from_json((store / f"{second['manifest_id']}.json").read_bytes())
    [entry] = index.for_target(hashlib.sha256(new).hexdigest())
    assert entry.method == "hdiffpatch"  # chosen for an ELF file, and smaller than zstd's

    for number in (1, 2):
        r = c.put("/images/engine/branches/production", json={"version": str(number)})
        assert r.status_code == 200, r.text
        report = Engine(published.content_url, tmp_path / "engine", "engine").sync()
        assert on_disk(tmp_path / "engine") == expected(v1 if number == 1 else v2)
    assert report.applied_patches == 1 and report.fetched_blobs == 0
    assert report.downloaded_bytes == entry.size < len(new) // 20
    # Its timings say where the update went: each phase it ran, inside its seconds (the
    # sums over workers inside "obtain", the garbage collection after).
    t = report.timings
    phases = {"resolve", "plan", "obtain", "fetch", "apply", "commit", "install", "collect"}
    assert set(t) == phases | {"fetch_wall", "apply_wall"}
    assert all(t[phase] > 0 for phase in ("resolve", "obtain", "fetch", "apply", "install"))
    assert t["resolve"] + t["plan"] + t["obtain"] + t["install"] <= report.seconds + 0.001
    assert t["fetch"] + t["apply"] <= t["obtain"] * 4 + 0.001  # four workers at most
    for phase in ("fetch", "apply"):  # side by side inside obtain: at most their sum
        assert 0 < t[f"{phase}_wall"] <= min(t[phase], t["obtain"]) + 0.001


def test_a_new_file_comes_as_a_fresh_patch(published: Published, tmp_path: Path) -> None:
    """A file no earlier version had comes as its fresh patch (from the empty content,
    compressed harder than the blob the upload stored), for fewer bytes than its blob."""
    c = published.server.client()
    assert c.post("/images", json={"name": "maps"}).status_code == 201
    words = [bytes([33 + (i * 7 + j) % 90 for j in range(3 + i % 7)]) for i in range(200)]
    new_map = b" ".join(words[(i * i + 3 * i) % 200] for i in range(60_000))
    v1 = {"readme.txt": b"maps\n"}
    v2 = {"readme.txt": b"maps\n", "maps/new.map": new_map}
    release(c, "maps", v1, "1.0")
    second = release(c, "maps", v2, "1.1")
    store = published.server.data / "store" / "content"
    index = PatchIndex.from_json(
        (store / "patches/index" / f"{second['manifest_id']}.json").read_bytes()
    )
    new_sha = hashlib.sha256(new_map).hexdigest()
    [entry] = index.for_target(new_sha)
    assert entry.base_sha256 == EMPTY_SHA256
    blob = (store / "blobs" / new_sha[:2] / new_sha).stat().st_size
    assert entry.size < blob

    for number in (1, 2):
        r = c.put("/images/maps/branches/production", json={"version": str(number)})
        assert r.status_code == 200, r.text
        report = Engine(published.content_url, tmp_path / "maps", "maps").sync()
        assert on_disk(tmp_path / "maps") == expected(v1 if number == 1 else v2)
    assert report.applied_patches == 1 and report.fetched_blobs == 0
    assert report.downloaded_bytes == entry.size


def test_multi_version_gap_and_side_by_side_branches(published: Published, tmp_path: Path) -> None:
    published.point("production", 1)
    published.point("ptr", 3)
    live, ptr = tmp_path / "live", tmp_path / "ptr"
    sync(published.content_url, live, "production")
    shared = sync(published.content_url, ptr, "ptr")
    assert on_disk(live) == expected(published.versions[0])
    assert on_disk(ptr) == expected(published.versions[2])
    # The second install reuses what the first downloaded (same cache beside both).
    assert shared["reused_objects"] > 0
    published.point("production", 3)
    jump = sync(published.content_url, live, "production")
    assert on_disk(live) == expected(published.versions[2])
    assert jump["downloaded_bytes"] == 0  # v3 already held for the ptr install


def test_verify_and_repair(published: Published, tmp_path: Path) -> None:
    published.point("production", 2)
    target = tmp_path / "game"
    sync(published.content_url, target, "production")
    ok = run_cli("launcher", "verify", str(target), "--json")
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["clean"] is True

    damaged = target / "bin/game"
    damaged.chmod(0o644)
    with open(damaged, "r+b") as f:
        f.write(b"CORRUPT")
    (target / "data/asset03.bin").chmod(0o644)
    (target / "data/asset03.bin").unlink()
    (target / "cheat.dll").write_bytes(b"x")
    bad = run_cli("launcher", "verify", str(target), "--json")
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["modified"] == ["bin/game"]
    assert report["missing"] == ["data/asset03.bin"]
    assert report["extra"] == ["cheat.dll"]
    human = run_cli("launcher", "verify", str(target))
    assert human.returncode == 1
    assert "  modified: bin/game\n" in human.stdout
    assert "  missing: data/asset03.bin\n" in human.stdout
    assert "  not shipped (kept): cheat.dll\n" in human.stdout
    # The same command through the Typer app (the fast path answers the plain forms).
    typer_app = [sys.executable, "-c", "from changeover.cli.main import main; main()"]
    full = subprocess.run(
        [*typer_app, "launcher", "verify", str(target), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert full.returncode == 1 and json.loads(full.stdout) == report

    fixed = run_cli("launcher", "repair", str(target), "--json")
    assert fixed.returncode == 0, fixed.stderr
    # A file the build did not ship is the player's (or a mod's): repair keeps it.
    assert on_disk(target) == {**expected(published.versions[1]), **expected({"cheat.dll": b"x"})}
    assert run_cli("launcher", "verify", str(target), "--json").returncode == 0
    status = json.loads(run_cli("launcher", "status", str(target), "--json").stdout)
    assert status["version"] == 2
    assert status["up_to_date"] is True


@pytest.fixture
def static_server(published: Published, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Copies the content tree, as a deploy to object storage would, and serves the copy
    with a plain `http.server` (no range requests, no application logic)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve() -> str:
        root = tmp_path / f"static{len(servers)}"
        shutil.copytree(published.server.data / "store" / "content", root)

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

        handler = functools.partial(Quiet, directory=str(root))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    try:
        yield serve
    finally:
        for httpd in servers:
            httpd.shutdown()
            httpd.server_close()


def test_served_by_a_plain_static_server(
    published: Published, static_server: Callable[[], str], tmp_path: Path
) -> None:
    published.point("static", 1)
    target = tmp_path / "from-static"
    sync(static_server(), target, "static")
    assert on_disk(target) == expected(published.versions[0])
    published.point("static", 3)
    report = sync(static_server(), target, "static")
    assert report["version"] == 3
    assert on_disk(target) == expected(published.versions[2])


def test_bandwidth_limit(published: Published, tmp_path: Path) -> None:
    published.point("slow", 1)
    started = time.monotonic()
    report = sync(published.content_url, tmp_path / "slow", "slow", "--limit-rate", "1M")
    elapsed = time.monotonic() - started
    # A lower bound only: a slow machine can only make this take longer.
    assert elapsed >= 0.8 * report["downloaded_bytes"] / (1 << 20) - 1.0
    assert report["downloaded_bytes"] > 2 << 20


def test_bad_arguments(published: Published, tmp_path: Path) -> None:
    taken = tmp_path / "existing"
    taken.mkdir()
    (taken / "save.dat").write_bytes(b"precious")
    r = run_cli(
        "launcher",
        "sync",
        published.content_url,
        str(taken),
        "--image",
        "game",
        "--branch",
        "production",
    )
    assert r.returncode == 3
    assert "was not installed by changeover" in r.stderr
    assert (taken / "save.dat").read_bytes() == b"precious"

    r = run_cli(
        "launcher",
        "sync",
        published.content_url,
        str(tmp_path / "x"),
        "--image",
        "game",
        "--branch",
        "nope",
    )
    assert r.returncode == 4
    assert "the branch pointer of game/nope is not published" in r.stderr
    r = run_cli(
        "launcher",
        "sync",
        published.content_url,
        str(tmp_path / "x"),
        "--image",
        "../etc",
        "--branch",
        "b",
    )
    assert r.returncode == 3
    r = run_cli(
        "launcher", "sync", "http://127.0.0.1:9/content", str(tmp_path / "y"), "--image", "game"
    )
    assert r.returncode == 8
    r = run_cli(
        "launcher",
        "sync",
        published.content_url,
        str(tmp_path / "z"),
        "--image",
        "game",
        "--limit-rate",
        "fast",
    )
    assert r.returncode == 3
    assert "--limit-rate" in r.stderr
    r = run_cli("launcher", "verify", str(tmp_path / "never"))
    assert r.returncode == 3
    assert not os.path.lexists(tmp_path / "x")
