"""The player's files against a real control plane: builds pushed with ``changeover push
--user-data``, a game (a real process) that writes its save and its settings inside the
install, two updates, a repair and a verify through the CLI; and copy mode.

The player's files must come out byte for byte; repair must fetch exactly the damaged
file's object and nothing else."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests_helpers import Server, run_cli, start_server, stop_server, wait_job

pytestmark = pytest.mark.timeout(300)

PATTERNS = ("saves", "settings.ini")
SAME = b"unchanged in every version " * 4000  # no patch reaches it: repair needs its blob


def builds() -> list[dict[str, bytes]]:
    v1 = {
        "bin/game": b"game v1 " * 5000,
        "data/same.bin": SAME,
        "data/level1.bin": os.urandom(30_000),
        "data/gone-in-v2.bin": b"old",
        "settings.ini": b"volume=5\n",
    }
    v2 = {**v1, "bin/game": b"game v2 " * 5000, "settings.ini": b"volume=7\n"}
    del v2["data/gone-in-v2.bin"]
    v2["data/level2.bin"] = os.urandom(20_000)
    v3 = {**v2, "bin/game": b"game v3 " * 5000, "data/level1.bin": os.urandom(30_000)}
    return [v1, v2, v3]


@dataclass
class Saga:
    server: Server
    builds: list[dict[str, bytes]]

    @property
    def content_url(self) -> str:
        return self.server.url + "/content"

    def point(self, number: int) -> None:
        r = self.server.client().put("/images/saga/branches/live", json={"version": str(number)})
        assert r.status_code == 200, r.text

    def blob_size(self, data: bytes) -> int:
        sha = hashlib.sha256(data).hexdigest()
        return (self.server.data / "store" / "content" / "blobs" / sha[:2] / sha).stat().st_size


def push_release(server: Server, root: Path, label: str) -> None:
    """``changeover push --user-data`` (the CLI under test), then analyse and accept."""
    args = ["push", str(root), "--image", "saga", "--label", label, "--wait", "--json"]
    for pattern in PATTERNS:
        args += ["--user-data", pattern]
    pushed = server.cli(*args)
    assert pushed.returncode == 0, pushed.stderr
    update = json.loads(pushed.stdout)
    c = server.client()
    d = c.post("/images/saga/diffs", json={"update_id": update["id"]})
    assert d.status_code == 201, d.text
    assert wait_job(c, f"/diffs/{d.json()['id']}")["status"] == 5
    v = c.post(f"/diffs/{d.json()['id']}/accept")
    assert v.status_code == 201, v.text
    wait_job(c, f"/versions/{v.json()['id']}")


@pytest.fixture(scope="module")
def saga(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saga]:
    srv = start_server(tmp_path_factory.mktemp("player-data-server"), None)
    try:
        assert srv.client().post("/images", json={"name": "saga"}).status_code == 201
        versions = builds()
        for i, files in enumerate(versions):
            root = tmp_path_factory.mktemp(f"saga-v{i + 1}")
            for rel, data in files.items():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(data)
            push_release(srv, root, f"v{i + 1}")
        yield Saga(srv, versions)
    finally:
        stop_server(srv)


def sync(saga: Saga, target: Path, *extra: str) -> dict[str, Any]:
    r = run_cli(
        "launcher", "sync", saga.content_url, str(target), "--image", "saga",
        "--branch", "live", "--json", *extra,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    report: dict[str, Any] = json.loads(r.stdout)
    return report


GAME = """
import pathlib, sys
here = pathlib.Path.cwd()
(here / "saves").mkdir(exist_ok=True)
(here / "saves" / "slot1.sav").write_bytes(bytes(range(256)) * 40)
(here / "settings.ini").write_bytes(b"volume=11\\nfullscreen=no\\n")
(here / "bin" / "game.log").write_bytes(b"started\\n")
print("played")
"""


def play(target: Path) -> None:
    """The game, a real process started in its install, writes its save, its settings
    (over the default the build shipped) and a log beside its executable."""
    done = subprocess.run(
        [sys.executable, "-c", GAME], cwd=target, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "played", done.stderr


def snapshot(target: Path, paths: list[str]) -> dict[str, bytes]:
    return {p: (target / p).read_bytes() for p in paths}


def build_files(target: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        if rel not in PATTERNS:
            assert (target / rel).read_bytes() == data, rel


def test_the_players_files_survive_updates_repair_and_verify(saga: Saga, tmp_path: Path) -> None:
    target = tmp_path / "Saga"
    saga.point(1)
    sync(saga, target)
    assert (target / "settings.ini").read_bytes() == b"volume=5\n"
    play(target)
    mine = ["saves/slot1.sav", "settings.ini", "bin/game.log"]
    before = snapshot(target, mine)

    for number in (2, 3):
        saga.point(number)
        report = sync(saga, target)
        assert report["version"] == number
        assert snapshot(target, mine) == before
        build_files(target, saga.builds[number - 1])
    assert not (target / "data/gone-in-v2.bin").exists()  # the build's own file: dropped

    # Damage one build file by writing through it (its object is the same inode).
    damaged = target / "data/same.bin"
    damaged.chmod(0o644)
    with open(damaged, "r+b") as f:
        f.write(b"CORRUPTED")
    found = json.loads(run_cli("launcher", "verify", str(target), "--json").stdout)
    assert found["modified"] == ["data/same.bin"]
    assert found["missing"] == []
    assert found["user_data"] == ["saves/slot1.sav", "settings.ini"]
    assert found["extra"] == ["bin/game.log"]

    fixed = run_cli("launcher", "repair", str(target), "--json")
    assert fixed.returncode == 0, fixed.stderr
    repaired = json.loads(fixed.stdout)
    # Exactly the damaged file's object came down again: its blob, nothing else.
    assert repaired["sync"]["downloaded_bytes"] == saga.blob_size(SAME)
    assert repaired["sync"]["fetched_blobs"] == 1
    assert damaged.read_bytes() == SAME
    assert snapshot(target, mine) == before

    ok = run_cli("launcher", "verify", str(target), "--json")
    assert ok.returncode == 0, ok.stdout
    assert json.loads(ok.stdout)["clean"] is True
    assert snapshot(target, mine) == before
    build_files(target, saga.builds[2])


def test_copy_mode_lets_the_game_write_its_own_files(saga: Saga, tmp_path: Path) -> None:
    target = tmp_path / "Copied"
    saga.point(2)
    sync(saga, target, "--copy")
    game = target / "bin/game"
    assert os.stat(game).st_nlink == 1 and os.stat(game).st_mode & 0o200
    # The game rewrites one of its own files in place: only that install is touched.
    with open(target / "data/level1.bin", "r+b") as f:
        f.write(b"rewritten by the game")
    found = run_cli("launcher", "verify", str(target), "--json")
    assert json.loads(found.stdout)["modified"] == ["data/level1.bin"]
    fixed = json.loads(run_cli("launcher", "repair", str(target), "--json").stdout)
    assert fixed["sync"]["downloaded_bytes"] == 0  # the object was intact: copied again
    assert (target / "data/level1.bin").read_bytes() == saga.builds[1]["data/level1.bin"]

    saga.point(3)
    sync(saga, target)  # no option: the install keeps its mode
    assert os.stat(target / "bin/game").st_nlink == 1
    status = json.loads(run_cli("launcher", "status", str(target), "--json").stdout)
    assert status["version"] == 3
    sync(saga, target, "--no-copy")  # back to shared read-only links: rebuilt
    assert os.stat(target / "bin/game").st_nlink > 1
    assert not os.stat(target / "bin/game").st_mode & 0o222
    build_files(target, saga.builds[2])
