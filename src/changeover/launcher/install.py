"""An install directory that is always one complete version, switched atomically.

``DIR`` is a symbolic link to a complete tree ``CACHE/trees/<key>/<manifest>-<nonce>/``
whose files are hard links into the object store. A new version is built as a new tree
beside the old one and then ``DIR`` is repointed with one ``rename`` — so a kill, a power
cut or a full disk at any instant leaves ``DIR`` on the old version or the new one, never
a mix. The previous tree is removed after the switch; unchanged files cost no space, being
links to the same objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from changeover.content.manifest import FileEntry, Manifest
from changeover.content.store import atomic_write
from changeover.errors import InvalidInput
from changeover.launcher.objects import ObjectStore

HASH_BLOCK = 1 << 20
HASH_THREADS = 4


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

    @property
    def trees(self) -> Path:
        return self.cache / "trees" / self.key

    @property
    def record_path(self) -> Path:
        return self.cache / "installs" / f"{self.key}.json"

    def check_managed(self) -> None:
        """Refuse to take over a real directory the launcher did not make.

        Raises:
            InvalidInput: ``target`` exists and is not our symlink.
        """
        if self.target.is_symlink() or not self.target.exists():
            return
        raise InvalidInput(
            f"{self.target} exists and was not installed by changeover; choose a new or"
            " empty path (the launcher manages it as a link to a complete version)"
        )

    def current_tree(self) -> Path | None:
        if not self.target.is_symlink():
            return None
        tree = Path(os.readlink(self.target))
        return tree if tree.is_dir() else None

    def record(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.record_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data

    def current_manifest(self) -> Manifest | None:
        """The manifest the install's current tree was built from."""
        tree = self.current_tree()
        if tree is None:
            return None
        try:
            return Manifest.from_json((tree.parent / f"{tree.name}.manifest.json").read_bytes())
        except FileNotFoundError:
            return None

    def build_tree(self, manifest: Manifest, objects: ObjectStore) -> Path:
        """Build a complete tree of the manifest from held objects; returns its path."""
        self.trees.mkdir(parents=True, exist_ok=True)
        name = f"{manifest.id[:16]}-{secrets.token_hex(4)}"
        staging = self.trees / f".tmp-{name}"
        try:
            staging.mkdir()
            for f in manifest:
                dest = staging / f.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                if f.link is not None:
                    os.symlink(f.link, dest)
                else:
                    os.link(objects.path(f.sha256, f.executable), dest)
            atomic_write(self.trees / f"{name}.manifest.json", manifest.canonical_bytes())
            _fsync_dir(staging)
            tree = self.trees / name
            os.rename(staging, tree)
            _fsync_dir(self.trees)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return tree

    def switch(self, tree: Path, record: dict[str, Any]) -> None:
        """Point the install at ``tree`` in one atomic step, then drop the old tree."""
        old = self.current_tree()
        self.target.parent.mkdir(parents=True, exist_ok=True)
        link = self.target.with_name(f".{self.target.name}.{secrets.token_hex(4)}.link")
        os.symlink(tree, link)
        try:
            os.replace(link, self.target)
        except BaseException:
            link.unlink(missing_ok=True)
            raise
        _fsync_dir(self.target.parent)
        atomic_write(self.record_path, json.dumps(record, indent=2).encode())
        if old is not None and old != tree:
            remove_tree(old)

    def cleanup(self) -> None:
        """Remove trees the install no longer points at (left by a kill mid-build)."""
        if not self.trees.exists():
            return
        current = self.current_tree()
        for entry in self.trees.iterdir():
            if entry.is_dir() and entry != current:
                remove_tree(entry)
            elif (
                entry.suffix == ".json"
                and current is not None
                and entry.name != f"{current.name}.manifest.json"
            ):
                entry.unlink(missing_ok=True)


def remove_tree(tree: Path) -> None:
    shutil.rmtree(tree, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (tree.parent / f"{tree.name}.manifest.json").unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class VerifyReport:
    ok: int
    missing: list[str]
    modified: list[str]
    extra: list[str]
    bytes_hashed: int

    @property
    def clean(self) -> bool:
        return not (self.missing or self.modified or self.extra)


def _hash(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def verify_tree(root: Path, manifest: Manifest) -> VerifyReport:
    """Hash every file under ``root`` against ``manifest`` (hashing runs in threads:
    hashlib releases the GIL, so this uses every core)."""

    def check(f: FileEntry) -> tuple[str, str]:
        p = root / f.path
        if f.link is not None:
            if not p.is_symlink():
                return f.path, "missing" if not os.path.lexists(p) else "modified"
            return f.path, "ok" if os.readlink(p) == f.link else "modified"
        if not p.is_file() or p.is_symlink():
            return f.path, "missing"
        if p.stat().st_size != f.size:
            return f.path, "modified"
        return f.path, "ok" if _hash(p) == f.sha256 else "modified"

    with ThreadPoolExecutor(HASH_THREADS) as pool:
        results = list(pool.map(check, manifest))
    wanted = {f.path for f in manifest}
    extra = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if (p.is_file() or p.is_symlink()) and str(p.relative_to(root)) not in wanted
    )
    return VerifyReport(
        ok=sum(1 for _, r in results if r == "ok"),
        missing=sorted(p for p, r in results if r == "missing"),
        modified=sorted(p for p, r in results if r == "modified"),
        extra=extra,
        bytes_hashed=sum(f.size for f in manifest if f.link is None),
    )
