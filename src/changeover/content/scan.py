"""Turn a build directory on disk into a manifest.

Scanning refuses what cannot be shipped safely (links out of the tree, names that are not
UTF-8, devices and sockets, an empty build) before a byte is uploaded, so CI learns about
a bad build at the start of a push rather than at the end.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from changeover.content.manifest import FileEntry, Manifest, check_link, check_path
from changeover.errors import InvalidInput, UnsafePath

HASH_BLOCK = 1 << 20

Progress = Callable[[int], None]


def hash_file(path: Path, progress: Progress | None = None) -> str:
    """SHA-256 of a file, read in blocks so memory stays bounded for any size."""
    h = hashlib.sha256()
    buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            if progress is not None:
                progress(n)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def walk(root: Path) -> list[tuple[str, os.stat_result]]:
    """Every regular file and symlink under ``root`` as (relative path, lstat), sorted.

    Raises:
        UnsafePath: a name that is not UTF-8, or a link pointing outside ``root``.
        InvalidInput: ``root`` is missing, not a directory, or holds a device/socket/fifo.
    """
    if not root.is_dir():
        raise InvalidInput(f"build directory {root} does not exist or is not a directory")
    found: list[tuple[str, os.stat_result]] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(root / rel_dir if rel_dir else root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            check_path(rel)
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                check_link(rel, os.readlink(entry.path))
                _check_link_resolves_inside(root, rel)
                found.append((rel, st))
            elif stat.S_ISDIR(st.st_mode):
                stack.append(rel)
            elif stat.S_ISREG(st.st_mode):
                found.append((rel, st))
            else:
                raise InvalidInput(f"{rel} is not a regular file, directory or link", path=rel)
    found.sort(key=lambda x: x[0])
    return found


def _check_link_resolves_inside(root: Path, rel: str) -> None:
    # The textual check in check_link cannot see links chained through other links.
    real_root = root.resolve()
    target = (root / rel).resolve()
    if target != real_root and real_root not in target.parents:
        raise UnsafePath(rel, "link resolves outside the build")


def scan(root: Path, progress: Progress | None = None) -> Manifest:
    """Hash every file under ``root`` and return its manifest.

    Raises:
        InvalidInput: an empty build or an unshippable file (see :func:`walk`).
    """
    files: list[FileEntry] = []
    for rel, st in walk(root):
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(root / rel)
            files.append(FileEntry(rel, 0, sha256_bytes(target.encode()), mode=0o777, link=target))
        else:
            digest = hash_file(root / rel, progress)
            files.append(FileEntry(rel, st.st_size, digest, mode=stat.S_IMODE(st.st_mode)))
    if not files:
        raise InvalidInput(f"build directory {root} is empty: there is nothing to ship")
    return Manifest.of(files)
