"""The install switch: the directory-rename switch and its journal, the choice between the
two switches, and one sync at a time per install (a lock that works on Windows too).

A switch killed between its renames is a real process, really killed (SIGKILL) while it
waits at the step the test names; the next run recovers from what the disk holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from changeover.errors import Conflict, InvalidInput
from changeover.launcher.install import Install
from changeover.launcher.switch import (
    JOURNAL,
    POINTER,
    SWITCH_ENV,
    RenameSwitch,
    SymlinkSwitch,
    default_kind,
    switch_for,
)
from changeover.launcher.sync import Syncer


def make_tree(trees: Path, name: str, content: str) -> Path:
    tree = trees / name
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "file.txt").write_text(content)
    return tree


def contents(target: Path) -> str:
    return (target / "sub" / "file.txt").read_text()


def test_rename_switch_moves_trees_and_keeps_the_old_one_for_removal(tmp_path: Path) -> None:
    trees, target = tmp_path / "cache" / "trees", tmp_path / "game"
    sw = RenameSwitch(target, trees)
    assert sw.current() is None and not sw.managed()
    assert sw.switch(make_tree(trees, "a", "one")) is None
    assert contents(target) == "one"
    assert not target.is_symlink()
    assert sw.current_name() == "a" and sw.current() == target and sw.managed()
    old = sw.switch(make_tree(trees, "b", "two"))
    assert contents(target) == "two"
    assert old == trees / "a" and contents(old) == "one"
    assert sw.current_name() == "b"
    assert not (trees / JOURNAL).exists()
    assert not (trees / "b").exists()


def test_a_failed_second_rename_puts_the_old_version_back(tmp_path: Path) -> None:
    trees, target = tmp_path / "trees", tmp_path / "game"
    sw = RenameSwitch(target, trees)
    sw.switch(make_tree(trees, "a", "one"))
    with pytest.raises(InvalidInput):
        sw.switch(tmp_path / "elsewhere")  # not a tree of the cache: refused before any rename
    missing = trees / "gone"  # a tree that vanished: the second rename fails
    with pytest.raises(FileNotFoundError):
        sw.switch(missing)
    assert contents(target) == "one"
    assert sw.current_name() == "a"
    assert not (trees / JOURNAL).exists()


SWITCHER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from changeover.launcher import switch as mod

    target, trees, new, stop_at = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    real_rename, real_write = os.rename, mod.atomic_write
    renames = [0]

    def wait_here(step):
        if step == stop_at:
            print(step, flush=True)
            sys.stdin.read()  # the test kills us here

    def rename(src, dst):
        wait_here(f"before-rename-{renames[0] + 1}")
        real_rename(src, dst)
        renames[0] += 1

    def write(path, data, *args):
        if path.name == mod.POINTER:
            wait_here("before-pointer")
        real_write(path, data, *args)

    mod.os.rename = rename
    mod.atomic_write = write
    mod.RenameSwitch(target, trees).switch(trees / new)
    print("done", flush=True)
    """
)


def switch_killed_at(target: Path, trees: Path, new: str, step: str) -> None:
    """Run a rename switch to ``new`` in a child process and SIGKILL it at ``step``."""
    child = subprocess.Popen(
        [sys.executable, "-c", SWITCHER, str(target), str(trees), new, step],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()  # blocks until the child reaches the step
        assert line == step, f"the child said {line!r}"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
    assert (trees / JOURNAL).exists(), "killed mid-switch, the journal must be left"


@pytest.mark.parametrize(
    ("step", "after"),
    [
        ("before-rename-1", "one"),  # nothing moved yet: rolled back
        ("before-rename-2", "two"),  # DIR moved away, the new tree not in: completed
        ("before-pointer", "two"),  # both renames done, the pointer not: completed
    ],
)
def test_a_switch_killed_mid_way_is_completed_or_rolled_back(
    tmp_path: Path, step: str, after: str
) -> None:
    trees, target = tmp_path / "trees", tmp_path / "game"
    RenameSwitch(target, trees).switch(make_tree(trees, "a", "one"))
    make_tree(trees, "b", "two")
    switch_killed_at(target, trees, "b", step)
    if step == "before-rename-2":
        assert not target.exists()  # the state the journal is for
    sw = RenameSwitch(target, trees)
    assert sw.managed()  # DIR (or its absence) is still ours while the journal is there
    sw.recover()
    assert contents(target) == after
    assert sw.current_name() == ("a" if after == "one" else "b")
    assert not (trees / JOURNAL).exists()
    # The other tree is left in the cache for Install.cleanup to remove.
    assert (trees / ("b" if after == "one" else "a")).is_dir()


def test_a_first_install_killed_mid_switch_is_completed(tmp_path: Path) -> None:
    trees, target = tmp_path / "trees", tmp_path / "game"
    make_tree(trees, "a", "one")
    switch_killed_at(target, trees, "a", "before-pointer")
    assert RenameSwitch(target, trees).current_name() is None
    sw = switch_for(target, trees)  # found by its journal, whatever the default
    assert isinstance(sw, RenameSwitch)
    sw.recover()
    assert contents(target) == "one" and sw.current_name() == "a"


def test_the_switch_is_chosen_by_the_environment_for_new_installs_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trees = tmp_path / "trees"
    monkeypatch.delenv(SWITCH_ENV, raising=False)
    assert default_kind() == ("rename" if os.name == "nt" else "symlink")
    monkeypatch.setenv(SWITCH_ENV, "rename")
    assert default_kind() == "rename"
    assert isinstance(switch_for(tmp_path / "new", trees), RenameSwitch)
    monkeypatch.setenv(SWITCH_ENV, "hardlink")
    with pytest.raises(InvalidInput, match=SWITCH_ENV):
        default_kind()
    # An existing install keeps its switch whatever the environment says.
    SymlinkSwitch(tmp_path / "linked", trees).switch(make_tree(trees, "a", "one"))
    assert isinstance(switch_for(tmp_path / "linked", trees), SymlinkSwitch)
    monkeypatch.setenv(SWITCH_ENV, "symlink")
    RenameSwitch(tmp_path / "renamed", trees).switch(make_tree(trees, "b", "two"))
    assert (trees / POINTER).read_text() == "b"
    assert isinstance(switch_for(tmp_path / "renamed", trees), RenameSwitch)


def test_a_real_directory_the_launcher_did_not_make_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SWITCH_ENV, "rename")
    target = tmp_path / "game"
    (target / "mine").mkdir(parents=True)
    with pytest.raises(InvalidInput, match="not installed by changeover"):
        Install(target, tmp_path / "cache").check_managed()


HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from changeover.launcher.install import Install

    install = Install(Path(sys.argv[1]), Path(sys.argv[2]))
    with install.locked():
        print("locked", flush=True)
        sys.stdin.read()
    """
)


def test_a_second_sync_of_the_same_install_is_a_conflict(tmp_path: Path) -> None:
    target, cache = tmp_path / "game", tmp_path / "cache"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(target), str(cache)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        # The lock is taken before any network: no server is needed to see the refusal.
        syncer = Syncer("http://127.0.0.1:9/content", target, cache=cache)
        with pytest.raises(Conflict, match="being updated by another launcher"):
            syncer.sync("game", "production")
        with pytest.raises(Conflict):
            syncer.repair()
        # Another install in the same cache is not held.
        with Install(tmp_path / "other", cache).locked():
            pass
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.stdout.close()
        assert holder.wait(timeout=60) == 0
    # Released with its holder: the next one gets it.
    with Install(target, cache).locked():
        pass


def test_the_lock_is_reentrant_within_one_sync(tmp_path: Path) -> None:
    install = Install(tmp_path / "game", tmp_path / "cache")
    with install.locked(), install.locked():
        record = {"image": "game"}
        install.write_record(record)
    assert json.loads(install.record_path.read_text()) == record


def test_two_syncs_in_one_process_conflict_too(tmp_path: Path) -> None:
    # The desktop app runs syncs on worker threads: one install, one at a time there too.
    first = Install(tmp_path / "game", tmp_path / "cache")
    second = Install(tmp_path / "game", tmp_path / "cache")
    with first.locked(), pytest.raises(Conflict), second.locked():
        pass
    with second.locked():
        pass
