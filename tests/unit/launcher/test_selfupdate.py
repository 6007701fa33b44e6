"""The pure parts of the launcher's self-update: the decision, the slots, the probe's
answer, the environment of the next launcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from changeover.launcher.selfupdate import (
    RESTARTED_ENV,
    Layout,
    child_env,
    decide,
    executable_name,
    is_running,
    other_slot,
    probe_version,
)


def test_other_slot_alternates() -> None:
    assert other_slot(None) == "a"
    assert other_slot("a") == "b"
    assert other_slot("b") == "a"


def test_decide() -> None:
    # The current slot already holds what the branch points at.
    d = decide("a", "m1", "m1", "2.0.0", "1.0.0")
    assert (d.update, d.slot) == (False, "a")
    # The branch moved: into the slot not in use, never the running one.
    d = decide("a", "m1", "m2", "3.0.0", "2.0.0")
    assert (d.update, d.slot) == (True, "b")
    d = decide("b", "m1", "m2", "3.0.0", "2.0.0")
    assert (d.update, d.slot) == (True, "a")
    # No slot yet: the unpacked launcher is up to date when it is the branch's label.
    d = decide(None, None, "m1", "1.0.0", "1.0.0")
    assert (d.update, d.slot) == (False, None)
    d = decide(None, None, "m2", "2.0.0", "1.0.0")
    assert (d.update, d.slot) == (True, "a")
    # A development build always installs the published launcher.
    assert decide(None, None, "m1", "dev", "dev").update


@pytest.mark.parametrize(
    ("code", "out", "expected"),
    [
        (0, "2.0.0\n", "2.0.0"),
        (0, "  2.0.0  \n", "2.0.0"),
        (1, "2.0.0\n", None),
        (0, "", None),
        (0, "2.0.0\nTraceback\n", None),
        (-9, "", None),
    ],
)
def test_probe_version(code: int, out: str, expected: str | None) -> None:
    assert probe_version(code, out) == expected


def test_child_env_undoes_the_bundles_library_path() -> None:
    env = child_env(
        {"LD_LIBRARY_PATH": "/old/_internal:/usr/lib/x", "LD_LIBRARY_PATH_ORIG": "/usr/lib/x"},
        restarted="2.0.0",
    )
    assert env["LD_LIBRARY_PATH"] == "/usr/lib/x"
    assert "LD_LIBRARY_PATH_ORIG" not in env
    assert env["PYINSTALLER_RESET_ENVIRONMENT"] == "1"
    assert env[RESTARTED_ENV] == "2.0.0"
    # Unfrozen (as here), a library path the player set is theirs: kept.
    assert child_env({"LD_LIBRARY_PATH": "/mine"})["LD_LIBRARY_PATH"] == "/mine"
    assert RESTARTED_ENV not in child_env({})


def test_layout_pointer(tmp_path: Path) -> None:
    layout = Layout(tmp_path / ".launcher")
    assert layout.current() is None
    layout.point_at("b")
    assert layout.current() == "b"
    assert layout.executable("b") == tmp_path / ".launcher" / "b" / executable_name()
    layout.pointer.write_text("../../elsewhere\n")
    assert layout.current() is None  # only a slot name is followed


def test_executable_name() -> None:
    assert executable_name("linux") == "changeover-launcher"
    assert executable_name("win32") == "changeover-launcher.exe"


def test_is_running_compares_paths_not_files(tmp_path: Path) -> None:
    # Two slots may hold the same bootloader as hard links to one object.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "exe").write_bytes(b"x")
    (tmp_path / "b" / "exe").hardlink_to(tmp_path / "a" / "exe")
    (tmp_path / "current").symlink_to(tmp_path / "a")
    assert is_running(tmp_path / "current" / "exe", tmp_path / "a" / "exe")
    assert not is_running(tmp_path / "b" / "exe", tmp_path / "a" / "exe")


def test_a_self_update_that_cannot_start_fails_softly(tmp_path: Path) -> None:
    from changeover.launcher.config import load
    from changeover.launcher.selfupdate import SelfUpdater

    path = tmp_path / "launcher.toml"
    path.write_text(
        'title = "T"\ncontent_url = "http://127.0.0.1:9/content"\nroot = "missing.json"\n'
        f'image = "g"\ninstall_dir = "{tmp_path / "games"}"\n[[branches]]\nname = "production"\n'
        '[game.linux]\nexecutable = "g"\n[launcher]\nimage = "g-launcher"\n'
    )
    outcome = SelfUpdater(load(path), "1.0.0").run()
    assert outcome.status == "failed"
    assert outcome.executable is None  # no slot yet: the running launcher goes on
    assert "cannot read the pinned root" in outcome.message
    assert "goes on with the version it has" in outcome.message
    assert not (tmp_path / "games" / ".launcher" / "current").exists()
