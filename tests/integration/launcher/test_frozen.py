"""The packaged launcher (``make package``) run as players run it: a frozen executable with
an empty environment (no venv, no PYTHONPATH, no PATH) against a real control plane.

The module builds a package once (version 1.0.0, with a launcher.toml bundled beside it)
with ``packaging/build.py --without-app`` (the desktop app is another part's, and without
Qt a build takes a minute, not several), and makes version 2.0.0 from it: the same files
but the version file, as a release of the same launcher code. Every check of an install is
hash for hash against what was published.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import gates
from changeover.content.patch_index import PatchIndex
from tests_helpers import Server, release, run_cli, start_server, stop_server, wait_for, wait_job

from .conftest import elf_library, expected, make_versions, on_disk

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[3]
EXE = "changeover-launcher"
VERSION_FILE = Path("_internal", "changeover", "launcher", "version.txt")
"""Where a package keeps what its ``--version`` prints (``packaging/build.py``)."""
EMPTY_ENV: dict[str, str] = {}
"""What the frozen launcher runs with: nothing at all."""


@dataclass
class World:
    server: Server
    root: Path
    """The pinned root.json, exported from the server."""
    packages: dict[str, Path]
    """Version → the built folder (``dist/changeover-launcher``), published as that
    version of the image ``launcher``."""
    bundled_install: Path
    """The install_dir of the launcher.toml bundled in the packages."""
    tmp: Path

    @property
    def content_url(self) -> str:
        return self.server.url + "/content"

    def exe(self, version: str) -> Path:
        return self.packages[version] / EXE

    def config(self, install_dir: Path, name: str) -> Path:
        """A launcher.toml of this server, installing under ``install_dir``."""
        folder = self.tmp / "configs" / name
        folder.mkdir(parents=True)
        shutil.copyfile(self.root, folder / "root.json")
        path = folder / "launcher.toml"
        path.write_text(launcher_toml(self.content_url, install_dir))
        return path

    def point(self, image: str, label: str) -> None:
        r = self.server.client().put(
            f"/images/{image}/branches/production", json={"version": label}
        )
        assert r.status_code == 200, r.text


LZMA2_ONLY = "zstd,hdiffpatch-lzma2"


def launcher_toml(content_url: str, install_dir: Path) -> str:
    return f"""
title = "Frozen Test"
content_url = "{content_url}"
root = "root.json"
image = "game"
install_dir = "{install_dir}"

[[branches]]
name = "production"

[game.linux]
executable = "bin/game"

[launcher]
image = "launcher"
"""


def run(
    exe: Path, *args: str, timeout_s: float = 180, **popen: object
) -> subprocess.CompletedProcess[str]:
    """The frozen launcher with an empty environment, from a directory of its own."""
    return subprocess.run(
        [str(exe), *args],
        env=EMPTY_ENV,
        cwd=exe.parent,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def build(version: str, config: Path, dist: Path, work: Path) -> Path:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "packaging" / "build.py"),
            "--without-app",
            f"--version={version}",
            f"--config={config}",
            f"--dist={dist}",
            f"--work={work}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    folder = dist / EXE
    assert (folder / EXE).is_file(), done.stdout
    return folder


def relabelled(folder: Path, version: str, dist: Path) -> Path:
    """A copy of the package ``folder`` whose version file says ``version``: a studio's
    next release of the same launcher code, as far as a self-update can tell (a second
    PyInstaller run of the same sources, which this stands for, took a minute of the
    suite)."""
    copy = dist / EXE
    shutil.copytree(folder, copy, symlinks=True)
    (copy / VERSION_FILE).write_text(version + "\n", encoding="utf-8")
    return copy


def publish(server: Server, image: str, folder: Path, label: str) -> None:
    """Push a folder as a build of ``image``, analyse it and accept it as a version."""
    pushed = server.cli("push", str(folder), "--image", image, "--label", label, "--wait", "--json")
    assert pushed.returncode == 0, pushed.stderr
    update = json.loads(pushed.stdout)
    c = server.client()
    d = c.post(f"/images/{image}/diffs", json={"update_id": update["id"]})
    assert d.status_code == 201, d.text
    assert wait_job(c, f"/diffs/{d.json()['id']}", 300)["status"] == 5
    v = c.post(f"/diffs/{d.json()['id']}/accept")
    assert v.status_code == 201, v.text
    assert wait_job(c, f"/versions/{v.json()['id']}", 300)["status"] == 5


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        gates.unavailable("pyinstaller", "the standalone launcher is built with PyInstaller")
    tmp = tmp_path_factory.mktemp("frozen")
    # HDiffPatch's diffs coded by LZMA2 only: the package applies that method (the launcher's
    # own tests, ``test_sync``, apply the zstd-coded one; one native extension decodes both).
    srv = start_server(tmp / "server", None, env={"CHANGEOVER_PATCH_METHODS": LZMA2_ONLY})
    try:
        c = srv.client()
        for image in ("game", "launcher"):
            assert c.post("/images", json={"name": image}).status_code == 201
        for i, files in enumerate(make_versions(seed=19)):
            release(c, "game", files, f"v{i + 1}")
        exported = run_cli("keys", "root", "--data", str(srv.data))
        assert exported.returncode == 0, exported.stderr
        root = tmp / "root.json"
        root.write_text(exported.stdout)
        bundled = tmp / "bundled-config"
        bundled.mkdir()
        shutil.copyfile(root, bundled / "root.json")
        (bundled / "launcher.toml").write_text(
            launcher_toml(srv.url + "/content", tmp / "bundled-install")
        )
        first = build("1.0.0", bundled / "launcher.toml", tmp / "dist-1.0.0", tmp / "work")
        packages = {"1.0.0": first, "2.0.0": relabelled(first, "2.0.0", tmp / "dist-2.0.0")}
        for version, folder in packages.items():
            publish(srv, "launcher", folder, version)
        yield World(srv, root, packages, tmp / "bundled-install", tmp)
    finally:
        stop_server(srv)


def test_the_frozen_executable_installs_updates_verifies_and_repairs_a_game(
    world: World, tmp_path: Path
) -> None:
    exe = world.exe("1.0.0")
    versions = make_versions(seed=19)
    game = tmp_path / "game"
    world.point("game", "v1")
    args = ("sync", world.content_url, str(game), "--image", "game", "--root", str(world.root))

    first = run(exe, *args)
    assert first.returncode == 0, first.stderr
    assert on_disk(game) == expected(versions[0])

    world.point("game", "v3")
    second = run(exe, *args, "--json")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["label"] == "v3"
    assert report["downloaded_bytes"] < sum(len(b) for b in versions[2].values())
    assert on_disk(game) == expected(versions[2])

    assert run(exe, "verify", str(game)).returncode == 0
    status = run(exe, "status", str(game), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["up_to_date"] is True

    # A damaged install: verify finds it, repair brings back the published bytes.
    (game / "scripts" / "main.lua").unlink()
    damaged = run(exe, "verify", str(game))
    assert damaged.returncode == 1
    assert "missing: scripts/main.lua" in damaged.stdout
    repaired = run(exe, "repair", str(game))
    assert repaired.returncode == 0, repaired.stderr
    assert on_disk(game) == expected(versions[2])


def test_the_frozen_executable_applies_an_hdiffpatch_patch(world: World, tmp_path: Path) -> None:
    """The package carries HDiffPatch's native part and applies its patches: a relinked
    library comes as one HDiffPatch patch (coded by LZMA2, what this world's server
    allows), and the install ends byte for byte right."""
    c = world.server.client()
    assert c.post("/images", json={"name": "engine"}).status_code == 201
    old, new = elf_library(21, 400_000)
    v1 = {"lib/libengine.so": old, "readme.txt": b"engine\n"}
    v2 = {"lib/libengine.so": new, "readme.txt": b"engine\n"}
    release(c, "engine", v1, "1.0")
    second = release(c, "engine", v2, "1.1")
    indexes = world.server.data / "store" / "content" / "patches" / "index"
    index = PatchIndex.from_json((indexes / f"{second['manifest_id']}.json").read_bytes())
    [entry] = index.for_target(hashlib.sha256(new).hexdigest())
    assert entry.method == "hdiffpatch-lzma2"

    exe, game = world.exe("1.0.0"), tmp_path / "engine"
    args = ("sync", world.content_url, str(game), "--image", "engine", "--root", str(world.root))
    world.point("engine", "1.0")
    first = run(exe, *args)
    assert first.returncode == 0, first.stderr
    world.point("engine", "1.1")
    updated = run(exe, *args, "--json")
    assert updated.returncode == 0, updated.stderr
    report = json.loads(updated.stdout)
    assert report["applied_patches"] == 1 and report["fetched_blobs"] == 0, report
    assert report["downloaded_bytes"] == entry.size
    assert on_disk(game) == expected(v2)


def test_the_frozen_executable_parses_like_the_cli(world: World) -> None:
    exe = world.exe("1.0.0")
    assert run(exe, "--version").stdout == "1.0.0\n"
    assert run(world.exe("2.0.0"), "--version").stdout == "2.0.0\n"
    helped = run(exe, "--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("sync", "verify", "repair", "status", "self-update"):
        assert command in helped.stdout
    # The Typer path (help texts, a missing option) works frozen too.
    sync_help = run(exe, "sync", "--help")
    assert sync_help.returncode == 0, sync_help.stderr
    assert "--limit-rate" in sync_help.stdout
    missing = run(exe, "sync", world.content_url, "somewhere")
    assert missing.returncode == 2
    assert "--image" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_self_update_moves_to_the_new_package_and_survives_a_broken_one(
    world: World, tmp_path: Path
) -> None:
    install = tmp_path / "install"
    config = world.config(install, "self-update")
    layout = install / ".launcher"
    old = world.exe("1.0.0")

    # The branch is at 1.0.0, which is what runs: nothing to do, and no app in this build.
    world.point("launcher", "1.0.0")
    started = run(old, "--config", str(config))
    assert started.returncode == 2, started.stderr
    assert "changeover-launcher 1.0.0: the desktop app is not part of this build" in (
        started.stderr
    )
    assert not (layout / "current").exists()

    # The branch moves to 2.0.0: the old launcher installs it, checks it, restarts into it.
    world.point("launcher", "2.0.0")
    updated = run(old, "--config", str(config))
    assert updated.returncode == 2, updated.stderr
    assert "changeover-launcher 1.0.0: the launcher updated itself to 2.0.0" in updated.stderr
    # The files of the running package that 2.0.0 also holds were taken, not downloaded.
    got = re.search(r"updated itself to 2\.0\.0 \(([\d,]+) bytes downloaded\)", updated.stderr)
    assert got is not None, updated.stderr
    package_bytes = sum(p.stat().st_size for p in world.packages["2.0.0"].rglob("*") if p.is_file())
    assert int(got.group(1).replace(",", "")) < package_bytes // 10, got.group(0)
    print(f"first self-update: {got.group(1)} bytes downloaded of a {package_bytes:,}-byte package")
    assert "changeover-launcher 2.0.0: the desktop app is not part of this build" in (
        updated.stderr
    )
    assert (layout / "current").read_text() == "a\n"
    assert on_disk(layout / "a") == on_disk(world.packages["2.0.0"])
    assert run(layout / "a" / EXE, "--version").stdout == "2.0.0\n"

    # Started again, the old one goes straight to the new one: no second update.
    again = run(old, "--config", str(config))
    assert again.returncode == 2
    assert "updated itself" not in again.stderr
    assert "changeover-launcher 2.0.0: the desktop app" in again.stderr

    # A new package whose executable does not start: refused, the old launcher goes on.
    broken = tmp_path / "broken"
    shutil.copytree(world.packages["2.0.0"], broken, symlinks=True)
    (broken / EXE).unlink()
    (broken / EXE).write_bytes(b"\x7fELF but not really\n" * 100)
    (broken / EXE).chmod(0o755)
    publish(world.server, "launcher", broken, "3.0.0-broken")
    world.point("launcher", "3.0.0-broken")
    refused = run(old, "--config", str(config))
    assert refused.returncode == 2, refused.stderr
    assert "could not update itself" in refused.stderr
    assert "goes on with the version it has" in refused.stderr
    assert "changeover-launcher 2.0.0: the desktop app" in refused.stderr
    assert (layout / "current").read_text() == "a\n"

    # A self-update killed midway (here while it checks the new executable): the pointer
    # never moved, and the launcher that was current still runs.
    hangs = tmp_path / "hangs"
    shutil.copytree(world.packages["2.0.0"], hangs, symlinks=True)
    marker = tmp_path / "probe-started"
    (hangs / EXE).unlink()
    (hangs / EXE).write_text(f"#!/bin/sh\necho started > '{marker}'\nexec sleep 600\n")
    (hangs / EXE).chmod(0o755)
    publish(world.server, "launcher", hangs, "4.0.0-hangs")
    world.point("launcher", "4.0.0-hangs")
    proc = subprocess.Popen(
        [str(old), "--config", str(config)],
        env=EMPTY_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(marker.exists, 120, "the self-update to run the new executable")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (layout / "current").read_text() == "a\n"
    assert run(layout / "a" / EXE, "--version").stdout == "2.0.0\n"
    world.point("launcher", "2.0.0")
    after = run(old, "--config", str(config))
    assert after.returncode == 2
    assert "updated itself" not in after.stderr
    assert "changeover-launcher 2.0.0: the desktop app" in after.stderr
    verified = run(
        old, "verify", str(layout / "a"), "--cache", str(layout / ".changeover"), "--json"
    )
    assert json.loads(verified.stdout)["clean"] is True, verified.stdout

    # The next good package goes into the slot the killed update left half done, patched
    # from the current one: only what changed is downloaded.
    patched = tmp_path / "patched"
    shutil.copytree(world.packages["2.0.0"], patched, symlinks=True)
    (patched / VERSION_FILE).write_text("2.0.1\n")
    publish(world.server, "launcher", patched, "2.0.1")
    world.point("launcher", "2.0.1")
    moved = run(old, "self-update", "--config", str(config), "--json")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    outcome = json.loads(moved.stdout)
    assert (outcome["status"], outcome["version"]) == ("updated", "2.0.1"), outcome
    assert outcome["executable"] == str(layout / "b" / EXE)
    assert outcome["downloaded_bytes"] < 100_000, outcome
    assert (layout / "current").read_text() == "b\n"
    assert on_disk(layout / "b") == on_disk(patched)


def test_the_bundled_config_is_found_beside_the_executable(world: World) -> None:
    world.point("launcher", "2.0.0")
    checked = run(world.exe("2.0.0"), "self-update", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    outcome = json.loads(checked.stdout)
    assert outcome["status"] == "up-to-date", outcome
    assert outcome["version"] == "2.0.0"


def test_the_package_holds_none_of_the_server_side(world: World) -> None:
    """What the spec excludes stays out, though PyInstaller would follow imports made for
    type checking or inside functions into it (boto3 and botocore once added 23 MB)."""
    folder = world.packages["1.0.0"]
    bundled = {p.name.split(".")[0] for p in (folder / "_internal").iterdir()}
    server_side = {"boto3", "botocore", "s3transfer", "sqlalchemy", "fastapi", "uvicorn"}
    assert bundled.isdisjoint(server_side), sorted(bundled & server_side)
