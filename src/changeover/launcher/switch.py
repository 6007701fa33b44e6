"""How an install directory moves from one complete tree to the next, in one step.

Two ways, chosen by ``CHANGEOVER_LAUNCHER_SWITCH`` (``symlink`` or ``rename``) for a new
install; an existing install keeps the way it was made with (read from the disk):

* ``symlink`` (the default on POSIX): ``DIR`` is a symbolic link to the tree in the cache,
  repointed by one ``rename`` of a new link over it. Atomic; but a symbolic link needs a
  privilege or developer mode on Windows, and games and their tools do not all follow one.
* ``rename`` (the default on Windows): ``DIR`` is the tree itself, a real directory. The
  switch renames ``DIR`` back into the cache and the new tree to ``DIR``: two renames, so
  not atomic, which a small journal makes safe. The journal (``switch.json``, naming the
  old and the new tree) is written and fsynced before the first rename; a process killed
  between the renames leaves it, and the next run reads the disk and completes the switch
  (the new tree was complete before the journal was written) or, if the first rename had
  not happened, rolls it back. A rename that fails at run time (on Windows, a file of the
  game still open) is undone on the spot. ``current`` beside the trees names the tree
  ``DIR`` holds.

Either way a tree's manifest stays in the cache beside where the tree was built
(``<tree>.manifest.json``), under the tree's name.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Literal, Protocol

from changeover.content.files import atomic_write
from changeover.errors import InvalidInput

SWITCH_ENV = "CHANGEOVER_LAUNCHER_SWITCH"
SwitchKind = Literal["symlink", "rename"]
KINDS: tuple[SwitchKind, ...] = ("symlink", "rename")
JOURNAL = "switch.json"
POINTER = "current"


def default_kind() -> SwitchKind:
    """The switch a new install gets: the environment's choice, else the platform's."""
    value = os.environ.get(SWITCH_ENV, "")
    if not value:
        return "rename" if os.name == "nt" else "symlink"
    if value not in KINDS:
        raise InvalidInput(f"{SWITCH_ENV}={value!r}: use symlink or rename")
    return "rename" if value == "rename" else "symlink"


class Switch(Protocol):
    kind: SwitchKind

    def managed(self) -> bool:
        """Whether ``DIR`` (or a switch of it in progress) was made by this switch."""
        ...

    def current_name(self) -> str | None:
        """The name of the tree ``DIR`` holds, or ``None`` when it holds none."""
        ...

    def current(self) -> Path | None:
        """Where the current tree's files are read, or ``None``."""
        ...

    def switch(self, tree: Path) -> Path | None:
        """Make ``DIR`` the complete tree ``tree`` (a directory in ``trees``); returns
        where the previous tree now is (for the caller to remove), if there was one."""
        ...

    def recover(self) -> None:
        """Complete or roll back a switch a killed process left half done."""
        ...


def fsync_dir(path: Path) -> None:
    """Make the names in ``path`` durable. Windows cannot open a directory with
    ``os.open``; NTFS journals its metadata, so there the rename itself is the step."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SymlinkSwitch:
    kind: SwitchKind = "symlink"

    def __init__(self, target: Path, trees: Path) -> None:
        self.target = target
        self.trees = trees

    def managed(self) -> bool:
        return self.target.is_symlink()

    def current(self) -> Path | None:
        if not self.target.is_symlink():
            return None
        tree = Path(os.readlink(self.target))
        return tree if tree.is_dir() else None

    def current_name(self) -> str | None:
        tree = self.current()
        return tree.name if tree is not None else None

    def switch(self, tree: Path) -> Path | None:
        old = self.current()
        self.target.parent.mkdir(parents=True, exist_ok=True)
        link = self.target.with_name(f".{self.target.name}.{os.urandom(4).hex()}.link")
        os.symlink(tree, link)
        try:
            os.replace(link, self.target)
        except BaseException:
            link.unlink(missing_ok=True)
            raise
        fsync_dir(self.target.parent)
        return old if old != tree else None

    def recover(self) -> None:
        return None  # one rename: there is no half-done state


class RenameSwitch:
    kind: SwitchKind = "rename"

    def __init__(self, target: Path, trees: Path) -> None:
        self.target = target
        self.trees = trees
        self.journal = trees / JOURNAL
        self.pointer = trees / POINTER

    def managed(self) -> bool:
        return self.pointer.exists() or self.journal.exists()

    def current_name(self) -> str | None:
        try:
            name = self.pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name if name and self.target.is_dir() and not self.target.is_symlink() else None

    def current(self) -> Path | None:
        return self.target if self.current_name() is not None else None

    def switch(self, tree: Path) -> Path | None:
        if tree.parent != self.trees:
            raise InvalidInput(f"{tree} is not a tree of {self.trees}")
        self.recover()
        old = self.current_name()
        atomic_write(self.journal, json.dumps({"old": old, "new": tree.name}).encode())
        fsync_dir(self.trees)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        parked = self.trees / old if old is not None else None
        try:
            if parked is not None:
                os.rename(self.target, parked)
        except BaseException:
            self.journal.unlink(missing_ok=True)  # nothing moved: the switch never began
            raise
        try:
            os.rename(tree, self.target)
        except BaseException:
            if parked is not None:
                os.rename(parked, self.target)  # the old version back where it was
            self.journal.unlink(missing_ok=True)
            raise
        self._finish(tree.name)
        return parked

    def _finish(self, new: str) -> None:
        fsync_dir(self.target.parent)
        atomic_write(self.pointer, new.encode())
        self.journal.unlink(missing_ok=True)
        fsync_dir(self.trees)

    def recover(self) -> None:
        """Read the disk to see how far the journal's switch went: the new tree still in
        the cache and ``DIR`` in place means the first rename never happened (roll back:
        forget the journal); ``DIR`` gone means it was killed between the renames (the
        new tree is complete: finish); the new tree gone from the cache means both renames
        happened (only the pointer is left to write)."""
        try:
            entry = json.loads(self.journal.read_text(encoding="utf-8"))
            old, new = entry["old"], str(entry["new"])
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError):
            # Torn before its fsync (atomic_write makes that unlikely): no rename was
            # made before the journal was durable, so there is nothing to undo.
            self.journal.unlink(missing_ok=True)
            return
        staged = self.trees / new
        target_there = os.path.lexists(self.target)
        if staged.is_dir() and target_there:
            self.journal.unlink(missing_ok=True)  # rolled back: DIR still holds the old
            return
        if staged.is_dir():
            os.rename(staged, self.target)
            self._finish(new)
            return
        if target_there:
            self._finish(new)
            return
        # Neither the new tree nor DIR: only a hand that deleted them; put the old back.
        if old is not None and (self.trees / str(old)).is_dir():
            with contextlib.suppress(OSError):
                os.rename(self.trees / str(old), self.target)
        self.journal.unlink(missing_ok=True)


def switch_for(target: Path, trees: Path) -> Switch:
    """The switch of an existing install (read from the disk), else the default one."""
    if target.is_symlink():
        return SymlinkSwitch(target, trees)
    rename = RenameSwitch(target, trees)
    if rename.managed():
        return rename
    if default_kind() == "rename":
        return rename
    return SymlinkSwitch(target, trees)
