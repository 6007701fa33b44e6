"""Copy mode, user-data patterns and the player's files across tree switches, on real
trees of a real object store (no server: the objects are put in by hand)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from changeover.content.manifest import FileEntry, Manifest
from changeover.content.user_data import UserData, check_patterns
from changeover.errors import InvalidInput
from changeover.launcher.install import Install, verify_tree
from changeover.launcher.objects import ObjectStore
from changeover.launcher.switch import SWITCH_ENV


def manifest_of(files: dict[str, bytes], user_data: tuple[str, ...] = ()) -> Manifest:
    return Manifest.of(
        (
            FileEntry(
                p, len(b), hashlib.sha256(b).hexdigest(), 0o755 if p.startswith("bin/") else 0o644
            )
            for p, b in files.items()
        ),
        user_data,
    )


def install_version(
    install: Install,
    objects: ObjectStore,
    files: dict[str, bytes],
    *,
    mode: str = "link",
    user_data: tuple[str, ...] = (),
) -> Manifest:
    """Hold the objects, build the tree and switch to it, as a sync does."""
    manifest = manifest_of(files, user_data)
    for f in manifest:
        if not objects.has(f.sha256, f.executable):
            with objects.writer(f.sha256, f.size, f.executable) as out:
                out.write(files[f.path])
    previous = install.current_manifest()
    tree = install.build_tree(manifest, objects, mode=mode, previous=previous)  # type: ignore[arg-type]
    install.switch(tree, {"install_mode": mode}, manifest=manifest, previous=previous)
    return manifest


def tree_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


V1 = {
    "bin/game": b"game 1",
    "data/a.bin": b"a1",
    "data/old.bin": b"old",
    "settings.ini": b"volume=5",
}
V2 = {"bin/game": b"game 2", "data/a.bin": b"a1", "data/b.bin": b"b2", "settings.ini": b"volume=7"}
MINE = ("saves", "settings.ini")


@pytest.fixture(params=["symlink", "rename"])
def install(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Install:
    monkeypatch.setenv(SWITCH_ENV, request.param)
    return Install(tmp_path / "game", tmp_path / "cache")


def test_player_files_survive_updates_and_the_build_files_follow(
    install: Install, tmp_path: Path
) -> None:
    objects = ObjectStore(install.cache / "objects")
    install_version(install, objects, V1, user_data=MINE)
    game = install.target
    # A shipped file under a pattern is a writable copy, not the shared object.
    assert os.stat(game / "settings.ini").st_mode & 0o200
    assert os.stat(game / "settings.ini").st_nlink == 1
    assert os.stat(game / "bin/game").st_nlink == 2  # link mode: tree + object
    # The game writes: a save, its settings, a log beside it, an empty folder.
    (game / "saves").mkdir()
    (game / "saves/slot1.sav").write_bytes(b"level 3")
    (game / "settings.ini").write_bytes(b"volume=11")
    (game / "bin/crash.log").write_bytes(b"oops")
    (game / "screenshots").mkdir()
    install_version(install, objects, V2, user_data=MINE)
    got = tree_files(game)
    assert got["saves/slot1.sav"] == b"level 3"
    assert got["settings.ini"] == b"volume=11"  # the player's, not v2's default
    assert got["bin/crash.log"] == b"oops"
    assert (game / "screenshots").is_dir()
    assert got["bin/game"] == b"game 2" and got["data/b.bin"] == b"b2"
    assert "data/old.bin" not in got  # the build's file, dropped by the build
    report = verify_tree(game, install.current_manifest() or Manifest.of([]))
    assert report.clean
    assert report.user_data == ["saves/slot1.sav", "settings.ini"]
    assert report.extra == ["bin/crash.log"]
    # Exactly one tree left: the old one was removed after the switch.
    assert [p.name for p in install.trees.iterdir() if p.is_dir()] == (
        [] if install.switcher.kind == "rename" else [install.current_tree().name]  # type: ignore[union-attr]
    )


def test_a_deleted_user_data_file_comes_back_from_the_build(install: Install) -> None:
    objects = ObjectStore(install.cache / "objects")
    install_version(install, objects, V1, user_data=MINE)
    (install.target / "settings.ini").unlink()
    install_version(install, objects, V2, user_data=MINE)
    assert (install.target / "settings.ini").read_bytes() == b"volume=7"


def test_copy_mode_installs_writable_private_copies(install: Install) -> None:
    objects = ObjectStore(install.cache / "objects")
    install_version(install, objects, V1, mode="copy")
    game = install.target / "bin/game"
    assert os.stat(game).st_nlink == 1 and os.stat(game).st_mode & 0o200
    assert os.stat(game).st_mode & 0o100  # still executable
    game.write_bytes(b"patched by the game itself")
    held = objects.path(hashlib.sha256(b"game 1").hexdigest(), True)
    assert held.read_bytes() == b"game 1"  # the object is untouched
    report = verify_tree(install.target, install.current_manifest() or Manifest.of([]))
    assert report.modified == ["bin/game"]
    # An intact object is not deleted by repair's check; a damaged one is.
    sha = hashlib.sha256(b"game 1").hexdigest()
    assert objects.remove_damaged(sha, 6) == []
    held.chmod(0o644)
    held.write_bytes(b"GAME 1")
    assert objects.remove_damaged(sha, 6) == [held]


def test_a_new_build_file_wins_over_a_player_file_at_its_path(install: Install) -> None:
    objects = ObjectStore(install.cache / "objects")
    install_version(install, objects, V1)
    (install.target / "data/b.bin").write_bytes(b"the player's")
    install_version(install, objects, V2)
    assert (install.target / "data/b.bin").read_bytes() == b"b2"


def test_user_data_patterns() -> None:
    mine = UserData(["saves", "**/*.log", "cfg/*.ini"])
    assert mine.matches("saves") and mine.matches("saves/a/b.sav")
    assert mine.matches("game.log") and mine.matches("a/b/c.log")
    assert mine.matches("cfg/video.ini") and not mine.matches("cfg/sub/video.ini")
    assert not mine.matches("x/saves") and not mine.matches("bin/game")
    assert check_patterns(["b", "a", "b"]) == ("a", "b")
    for bad in ["", "/abs", "a/../b", "a\\b", "a//b", "./a", 3]:
        with pytest.raises(InvalidInput):
            check_patterns([bad])


def test_user_data_is_part_of_the_manifest_and_its_id() -> None:
    plain = manifest_of(V1)
    mine = manifest_of(V1, MINE)
    assert "user_data" not in plain.to_dict()  # manifests without it keep their ids
    assert plain.id != mine.id
    assert Manifest.from_json(mine.canonical_bytes()) == mine
    with pytest.raises(InvalidInput):
        Manifest.from_dict({"files": [], "user_data": "saves"})
