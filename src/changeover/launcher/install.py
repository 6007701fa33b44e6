"""An install directory that is always one complete version, switched atomically.

A version is built as a complete tree ``CACHE/trees/<key>/<manifest>-<nonce>/`` whose
files are hard links into the object store (or, in copy mode, writable copies), beside
the current one; then the install directory ``DIR`` is switched to it
(:mod:`changeover.launcher.switch`: a symbolic link repointed, or a directory renamed
under a journal) — so a kill, a power cut or a full disk at any instant leaves ``DIR`` on
the old version or the new one, never a mix. The previous tree is removed after the
switch; unchanged files cost no space in link mode, being links to the same objects.

Beside each tree, ``<tree>.manifest.json`` is the manifest it was built from (written by
the launcher from a TUF-verified target), which ``verify`` checks the tree against.

``verify`` (and ``repair``'s check) hashes every file with the SHA-256 its manifest entry
names it by: a file is its content only if that hash is proven for its bytes. The faster
digests of the signed delivery index (BLAKE3, chunk SHA-256s) are not used here: they are
a second statement about a content, and a signer compromised once could make one describe
other bytes (see :mod:`changeover.launcher.objects`). Trees built by earlier launchers kept
those digests in a ``<tree>.chunks.json`` sidecar; it is ignored, and deleted with its tree.

One sync at a time per install: a second one, from any process, gets ``Conflict`` (a lock
file in ``CACHE/locks``, held with the ``filelock`` library, which works on Windows too).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import secrets
import shutil
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import filelock

from changeover.content.chunks import READ_BLOCK, hash_range
from changeover.content.files import atomic_write
from changeover.content.manifest import Manifest
from changeover.content.user_data import UserData
from changeover.errors import Conflict, InvalidInput
from changeover.launcher.objects import ObjectStore
from changeover.launcher.switch import Switch, fsync_dir, switch_for


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


InstallMode = Literal["link", "copy"]
INSTALL_MODES: tuple[InstallMode, ...] = ("link", "copy")

HASH_THREADS = min(32, max(2, _cores()))
"""Threads that hash files in ``verify``: one per core (hashlib and reads release the GIL),
at least two so one thread's reads overlap the other's hashing."""
BATCH_BYTES = 8 << 20
"""``verify`` hands files smaller than this to its threads in batches of about this size."""


def default_cache(target: Path) -> Path:
    """Installs side by side in one folder share one cache (and so their downloads)."""
    return target.absolute().parent / ".changeover"


def install_key(target: Path) -> str:
    """A stable, readable name for an install directory inside the cache."""
    absolute = str(target.absolute())
    return f"{target.name}-{hashlib.sha256(absolute.encode()).hexdigest()[:10]}"


@dataclass
class Install:
    """One install directory and its bookkeeping in the cache."""

    target: Path
    cache: Path
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = install_key(self.target)
        self.switcher: Switch = switch_for(self.target, self.trees)
        self._lock = filelock.FileLock(self.cache / "locks" / f"{self.key}.lock")

    @property
    def trees(self) -> Path:
        return self.cache / "trees" / self.key

    @property
    def record_path(self) -> Path:
        return self.cache / "installs" / f"{self.key}.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this install for one sync or repair (re-entrant within a thread).

        Raises:
            Conflict: another sync of this install holds it, in this process or another.
        """
        (self.cache / "locks").mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(blocking=False)
        except filelock.Timeout:
            raise Conflict(
                f"{self.target} is being updated by another launcher; wait for it to end,"
                " then retry",
                install=str(self.target),
            ) from None
        try:
            yield
        finally:
            self._lock.release()

    def check_managed(self) -> None:
        """Refuse to take over a real directory the launcher did not make.

        Raises:
            InvalidInput: ``target`` exists and is not ours.
        """
        if self.switcher.managed() or not os.path.lexists(self.target):
            return
        raise InvalidInput(
            f"{self.target} exists and was not installed by changeover; choose a new or"
            " empty path (the launcher manages it as one complete version)"
        )

    def current_tree(self) -> Path | None:
        """Where the installed version's files are read (``DIR`` or its link's tree)."""
        return self.switcher.current()

    def current_name(self) -> str | None:
        """The installed tree's name: what changes when the install is switched."""
        return self.switcher.current_name()

    def record(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.record_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data

    def write_record(self, record: dict[str, Any]) -> None:
        atomic_write(self.record_path, json.dumps(record, indent=2).encode())

    def current_manifest(self) -> Manifest | None:
        """The manifest the install's current tree was built from."""
        name = self.current_name()
        if name is None:
            return None
        try:
            return Manifest.from_json((self.trees / f"{name}.manifest.json").read_bytes())
        except FileNotFoundError:
            return None

    def build_tree(
        self,
        manifest: Manifest,
        objects: ObjectStore,
        *,
        mode: InstallMode = "link",
        previous: Manifest | None = None,
    ) -> Path:
        """Build a complete tree of the manifest from held objects; returns its path.

        ``mode`` "link": files are read-only hard links to the objects (no space, shared
        by versions); "copy": writable copies, for games that write beside their own
        files. Either way a file under a user-data pattern is a writable copy, and the
        player's files in the current tree (``previous`` is its manifest) are carried
        over (:func:`carry_player_files`).
        """
        self.trees.mkdir(parents=True, exist_ok=True)
        name = f"{manifest.id[:16]}-{secrets.token_hex(4)}"
        staging = self.trees / f".tmp-{name}"
        current = self.current_tree()
        mine = player_paths(manifest, previous)
        made: set[Path] = set()  # a build's thousands of files share a few directories
        try:
            staging.mkdir()
            for f in manifest:
                dest = staging / f.path
                if dest.parent not in made:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    made.add(dest.parent)
                if f.link is not None:
                    os.symlink(f.link, dest)
                elif mine.matches(f.path):
                    continue  # below: the player's copy if there is one, else the build's
                elif mode == "copy":
                    copy_writable(objects.path(f.sha256, f.executable), dest, f.executable)
                else:
                    os.link(objects.path(f.sha256, f.executable), dest)
            if current is not None:
                carry_player_files(current, staging, manifest, previous)
            for f in manifest:
                dest = staging / f.path
                if f.link is None and mine.matches(f.path) and not os.path.lexists(dest):
                    copy_writable(objects.path(f.sha256, f.executable), dest, f.executable)
            atomic_write(self.trees / f"{name}.manifest.json", manifest.canonical_bytes())
            fsync_dir(staging)
            tree = self.trees / name
            os.rename(staging, tree)
            fsync_dir(self.trees)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return tree

    def switch(
        self,
        tree: Path,
        record: dict[str, Any],
        *,
        manifest: Manifest | None = None,
        previous: Manifest | None = None,
    ) -> None:
        """Make ``tree`` the install in one step, record it, then drop the old tree.

        With ``manifest``, player files the old tree gained after ``tree`` was built
        (a game still running) are carried over before the old tree is removed."""
        old = self.switcher.switch(tree)
        self.write_record({**record, "switch": self.switcher.kind})
        if old is None:
            return
        now = self.current_tree()
        if manifest is not None and now is not None:
            carry_player_files(old, now, manifest, previous)
        remove_tree(old)

    def cleanup(self) -> None:
        """Finish a switch a kill interrupted, then remove the trees the install no longer
        uses (left by a kill mid-build or mid-switch)."""
        self.switcher.recover()
        if not self.trees.exists():
            return
        current = self.current_tree()
        name = self.current_name()
        for entry in self.trees.iterdir():
            if entry.is_dir() and entry != current:
                remove_tree(entry)
            elif (
                entry.suffix == ".json"
                and name is not None
                and entry.name != f"{name}.manifest.json"
            ):
                entry.unlink(missing_ok=True)


def player_paths(manifest: Manifest, previous: Manifest | None) -> UserData:
    """The user-data patterns of the new version and of the one installed: a path that
    either calls the player's is kept."""
    return UserData(manifest.user_data + (previous.user_data if previous else ()))


def copy_writable(source: Path, dest: Path, executable: bool) -> None:
    """A private, writable copy of an object (the object itself stays read-only)."""
    shutil.copyfile(source, dest)
    os.chmod(dest, 0o755 if executable else 0o644)


def carry_player_files(
    old: Path, new: Path, manifest: Manifest, previous: Manifest | None
) -> list[str]:
    """Bring the player's files of the tree ``old`` into the tree ``new``; returns them.

    The player's: every file under a user-data pattern, and every file the installed
    build (``previous``) did not ship: saves, settings, logs, mods. A file of ``old`` the
    installed build shipped (and not under a pattern) is the build's: the new version
    replaces or drops it. A path already in ``new`` is left alone (the new build ships it
    and it is not user data, or it was carried already). Hard links where the disk
    allows (no copy, and the game's writes after this reach the same file), else copies;
    a player's file that is a read-only link to an object (trees of earlier launchers)
    is copied, writable.
    """
    mine = player_paths(manifest, previous)
    shipped = {f.path for f in previous} if previous is not None else set()
    build_dirs = {d for p in shipped for d in _ancestors(p)}
    carried: list[str] = []
    for rel, is_dir in _entries_under(old):
        if rel in shipped and not mine.matches(rel):
            continue
        if manifest.get(rel) is not None and not mine.matches(rel):
            continue  # the new build ships this path and does not call it the player's
        dest = new / rel
        if os.path.lexists(dest) or not _parents_are_dirs(new, rel):
            continue
        source = old / rel
        if is_dir:
            # An empty directory the player made (a saves folder) is kept; one the old
            # build's files were in is the build's. A directory with player files in it
            # comes with them.
            if rel not in build_dirs:
                dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), dest)
        elif not os.stat(source).st_mode & stat.S_IWUSR:
            copy_writable(source, dest, bool(os.stat(source).st_mode & 0o111))
        else:
            try:
                os.link(source, dest)
            except OSError:
                shutil.copy2(source, dest)
        carried.append(rel)
    return carried


def _clear_read_only(func: Any, path: str, exc_info: Any) -> None:
    """``rmtree``'s error handler: Windows deletes no read-only file (a hard link of an
    object is one) until its read-only attribute is cleared; other errors leave the entry
    for ``cleanup`` to try again next run."""
    if os.name != "nt":
        return  # on POSIX the mode of a file does not stop its deletion: leave its object's
    with contextlib.suppress(OSError):
        os.chmod(path, stat.S_IWRITE | stat.S_IREAD)
        func(path)


def _ancestors(path: str) -> Iterator[str]:
    parent = posixpath.dirname(path)
    while parent:
        yield parent
        parent = posixpath.dirname(parent)


def _parents_are_dirs(root: Path, rel: str) -> bool:
    """Whether nothing but directories (or nothing yet) stands on the way to ``rel``."""
    path = root
    for part in rel.split("/")[:-1]:
        path = path / part
        if os.path.lexists(path) and (path.is_symlink() or not path.is_dir()):
            return False
    return True


def _entries_under(root: Path) -> Iterator[tuple[str, bool]]:
    """(relative path, is a directory) of everything under ``root``, parents first;
    links are not followed."""
    stack = [(str(root), "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    yield rel, True
                    stack.append((entry.path, rel + "/"))
                else:
                    yield rel, False


def remove_tree(tree: Path) -> None:
    shutil.rmtree(tree, onerror=_clear_read_only)
    for sidecar in ("manifest", "chunks"):  # "chunks": left by earlier launchers
        with contextlib.suppress(FileNotFoundError):
            (tree.parent / f"{tree.name}.{sidecar}.json").unlink()


@dataclass(frozen=True)
class VerifyReport:
    ok: int
    missing: list[str]
    modified: list[str]
    extra: list[str]
    """Files the build did not ship: the player's (or another program's); kept, and no
    damage."""
    bytes_hashed: int
    user_data: list[str] = field(default_factory=list)
    """Files under the version's user-data patterns: the player's, not checked."""

    @property
    def clean(self) -> bool:
        return not (self.missing or self.modified)


Check = tuple[int, str]
"""One file to hash: (bytes, path); its expected SHA-256 is its manifest entry's."""


def verify_tree(root: Path, manifest: Manifest) -> VerifyReport:
    """Hash every file under ``root`` against the SHA-256 ``manifest`` names it by.

    Files under the manifest's user-data patterns are the player's: never checked.
    Hashing runs on ``HASH_THREADS`` threads (hashlib and file reads release the GIL),
    biggest files first so the threads end together, small files in batches.
    """
    mine = UserData(manifest.user_data)
    checked = Manifest.of(f for f in manifest if not mine.matches(f.path))
    status: dict[str, str] = {}
    work = _plan_checks(root, checked, status)
    expected = {f.path: f.sha256 for f in checked if f.link is None}
    batches = _batches(work)
    if batches:
        with ThreadPoolExecutor(min(HASH_THREADS, len(batches))) as pool:
            for bad in pool.map(lambda batch: _failed_checks(root, batch, expected), batches):
                for rel in bad:
                    status[rel] = "modified"
    wanted = {f.path for f in checked}
    others = [rel for rel in _files_under(root) if rel not in wanted]
    return VerifyReport(
        ok=sum(1 for r in status.values() if r == "ok"),
        missing=sorted(p for p, r in status.items() if r == "missing"),
        modified=sorted(p for p, r in status.items() if r == "modified"),
        extra=sorted(rel for rel in others if not mine.matches(rel)),
        bytes_hashed=sum(f.size for f in checked if f.link is None),
        user_data=sorted(rel for rel in others if mine.matches(rel)),
    )


def _plan_checks(root: Path, manifest: Manifest, status: dict[str, str]) -> list[Check]:
    """The files to hash, biggest first (so the threads end together instead of waiting
    on one large file started last); links, missing files and wrong sizes go straight to
    ``status``."""
    work: list[Check] = []
    for f in manifest:
        p = root / f.path
        if f.link is not None:
            if not p.is_symlink():
                status[f.path] = "missing" if not os.path.lexists(p) else "modified"
            else:
                status[f.path] = "ok" if os.readlink(p) == f.link else "modified"
            continue
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            status[f.path] = "missing"
            continue
        if not stat.S_ISREG(st.st_mode):
            status[f.path] = "missing"
            continue
        if st.st_size != f.size:
            status[f.path] = "modified"
            continue
        status[f.path] = "ok"
        work.append((f.size, f.path))
    work.sort(key=lambda w: -w[0])
    return work


def _batches(work: list[Check]) -> list[list[Check]]:
    """Big checks alone, small ones grouped into about ``BATCH_BYTES``: one task per small
    file costs more in thread hand-offs than hashing it (800 files of a few KB: 66 ms on
    two threads one by one, 15 ms on one thread)."""
    batches: list[list[Check]] = []
    pending: list[Check] = []
    filled = 0
    for item in work:
        if item[0] >= BATCH_BYTES:
            batches.append([item])
            continue
        pending.append(item)
        filled += item[0]
        if filled >= BATCH_BYTES:
            batches.append(pending)
            pending, filled = [], 0
    if pending:
        batches.append(pending)
    return batches


def _failed_checks(root: Path, batch: list[Check], expected: dict[str, str]) -> list[str]:
    """The paths of ``batch`` whose SHA-256 is not their manifest's (or cannot be read)."""
    buf = bytearray(READ_BLOCK)
    bad = []
    for size, rel in batch:
        try:
            digest = hash_range(root / rel, 0, size, buf)
        except OSError:
            digest = None
        if digest != expected[rel]:
            bad.append(rel)
    return bad


def _files_under(root: Path) -> Iterator[str]:
    """Relative paths of the files and symbolic links under ``root`` (links not followed)."""
    stack = [(str(root), "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                rel = prefix + entry.name
                if entry.is_symlink() or entry.is_file():
                    yield rel
                elif entry.is_dir():
                    stack.append((entry.path, rel + "/"))
