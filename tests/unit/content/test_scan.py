"""Unit tests for ``changeover.content.scan``: real trees on disk become manifests."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
from pathlib import Path

import pytest

from changeover.content.manifest import Manifest
from changeover.content.scan import HASH_BLOCK, hash_file, scan, sha256_bytes, walk
from changeover.errors import InvalidInput, UnsafePath
from gates import unavailable


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(root: Path, rel: str, data: bytes, mode: int = 0o644) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def pattern(n: int) -> bytes:
    """``n`` deterministic, non-repeating-looking bytes."""
    out = bytearray()
    block = b"seed"
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


@pytest.fixture
def build(tmp_path: Path) -> Path:
    root = tmp_path / "build"
    root.mkdir()
    return root


# -- a well-formed tree --------------------------------------------------------------------


def test_scan_records_sizes_hashes_and_modes(build: Path) -> None:
    big = pattern(2 * HASH_BLOCK + 12345)  # spans several read blocks
    contents = {
        "readme.txt": (b"hello\n", 0o644),
        "bin/server": (b"#!/bin/sh\nexec game\n", 0o755),
        "bin/tool": (b"\x7fELF", 0o750),
        "data/deep/er/level.pak": (big, 0o644),
        "data/secret.key": (b"k", 0o600),
        "ünïcödé/文件.txt": ("unicode ✓".encode(), 0o644),
        ".hidden": (b"dot", 0o644),
    }
    for rel, (data, mode) in contents.items():
        put(build, rel, data, mode)

    m = scan(build)

    assert [f.path for f in m] == sorted(contents)
    for rel, (data, mode) in contents.items():
        f = m.get(rel)
        assert f is not None, rel
        assert f.size == len(data)
        assert f.sha256 == hashlib.sha256(data).hexdigest()
        assert f.mode == mode
        assert f.link is None
        assert f.executable == bool(mode & 0o111)
    assert m.total_bytes == sum(len(d) for d, _ in contents.values())


def test_scan_records_zero_byte_files(build: Path) -> None:
    put(build, "empty.dat", b"")
    put(build, "sub/also-empty", b"")
    m = scan(build)
    assert len(m) == 2
    for f in m:
        assert f.size == 0
        assert f.sha256 == sha(b"")
    assert m.total_bytes == 0


def test_scan_lists_only_files_not_directories(build: Path) -> None:
    put(build, "a/b/c/file", b"x")
    (build / "a" / "empty-dir").mkdir()
    (build / "z" / "y").mkdir(parents=True)
    assert [f.path for f in scan(build)] == ["a/b/c/file"]
    assert [rel for rel, _ in walk(build)] == ["a/b/c/file"]


def test_scan_is_independent_of_where_the_tree_lives(build: Path, tmp_path: Path) -> None:
    put(build, "a", b"1")
    put(build, "d/b", b"22", 0o755)
    os.symlink("b", build / "d" / "l")
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(build, copy, symlinks=True)
    assert scan(build) == scan(copy)
    assert scan(build).id == scan(copy).id


def test_scan_result_round_trips_through_json(build: Path) -> None:
    put(build, "bin/run", b"#!", 0o755)
    os.symlink("run", build / "bin" / "current")
    m = scan(build)
    assert Manifest.from_json(m.canonical_bytes()) == m


# -- hashing -------------------------------------------------------------------------------


def test_hash_file_matches_hashlib_and_reports_progress(tmp_path: Path) -> None:
    data = pattern(3 * HASH_BLOCK + 1)
    path = put(tmp_path, "f", data)
    seen: list[int] = []
    assert hash_file(path, seen.append) == sha(data)
    assert sum(seen) == len(data)
    assert all(0 < n <= HASH_BLOCK for n in seen)
    assert len(seen) == 4


def test_hash_file_of_an_empty_file(tmp_path: Path) -> None:
    seen: list[int] = []
    assert hash_file(put(tmp_path, "e", b""), seen.append) == sha(b"")
    assert seen == []


def test_sha256_bytes() -> None:
    assert sha256_bytes(b"abc") == sha(b"abc")


def test_scan_progress_sums_to_the_total_bytes(build: Path) -> None:
    put(build, "a", pattern(HASH_BLOCK + 7))
    put(build, "b/c", pattern(100))
    put(build, "b/empty", b"")
    os.symlink("a", build / "link")  # links are not read: no progress for them
    seen: list[int] = []
    m = scan(build, seen.append)
    assert sum(seen) == m.total_bytes == HASH_BLOCK + 107
    assert all(n > 0 for n in seen)


def test_scan_hashes_a_large_sparse_file(build: Path) -> None:
    # A sparse file: 512 MiB apparent size, but only the last few bytes are ever written,
    # so it takes no disk space and no disk I/O; the kernel serves the hole as zeros.
    # What remains is CPU: copying the zeros out and SHA-256 over them twice (scan and the
    # expected value), about 1-2 s in all. The odd size makes the last read block partial.
    hole = 512 << 20
    tail = b"end of the sparse file"
    path = build / "huge.pak"
    with open(path, "wb") as f:
        f.truncate(hole)
        f.seek(hole)
        f.write(tail)
    st = path.stat()
    assert st.st_size == hole + len(tail)
    # Skip rather than fill the disk if this filesystem has no sparse files.
    if st.st_blocks * 512 > 64 << 20:
        unavailable("sparse-files", f"the filesystem under {build} does not support them")

    seen: list[int] = []
    m = scan(build, seen.append)

    expected = hashlib.sha256()
    zeros = bytes(HASH_BLOCK)
    for _ in range(hole // HASH_BLOCK):
        expected.update(zeros)
    expected.update(tail)
    (huge,) = m
    assert huge.path == "huge.pak"
    assert huge.size == hole + len(tail)
    assert huge.sha256 == expected.hexdigest()
    assert sum(seen) == huge.size


# -- empty or missing builds ---------------------------------------------------------------


def test_scan_refuses_an_empty_directory(build: Path) -> None:
    with pytest.raises(InvalidInput, match="empty") as info:
        scan(build)
    assert not isinstance(info.value, UnsafePath)


def test_scan_refuses_a_directory_of_empty_directories(build: Path) -> None:
    (build / "a" / "b" / "c").mkdir(parents=True)
    (build / "d").mkdir()
    with pytest.raises(InvalidInput, match="empty"):
        scan(build)


@pytest.mark.parametrize("make_file", [False, True])
def test_scan_refuses_a_missing_directory_or_a_file(tmp_path: Path, make_file: bool) -> None:
    root = tmp_path / "nope"
    if make_file:
        root.write_bytes(b"I am a file")
    with pytest.raises(InvalidInput, match="does not exist or is not a directory"):
        scan(root)


# -- links ---------------------------------------------------------------------------------


def test_scan_records_links_inside_the_tree(build: Path) -> None:
    put(build, "bin/game-1.2", b"binary", 0o755)
    put(build, "assets/a.pak", b"assets")
    os.symlink("game-1.2", build / "bin" / "game")
    os.symlink("../assets/a.pak", build / "bin" / "assets.pak")
    os.symlink("assets", build / "assets-link")  # a link to a directory is not followed
    os.symlink("not-there", build / "dangling")  # dangling, but would resolve inside

    m = scan(build)

    assert [f.path for f in m] == [
        "assets-link",
        "assets/a.pak",
        "bin/assets.pak",
        "bin/game",
        "bin/game-1.2",
        "dangling",
    ]
    for path, target in [
        ("bin/game", "game-1.2"),
        ("bin/assets.pak", "../assets/a.pak"),
        ("assets-link", "assets"),
        ("dangling", "not-there"),
    ]:
        f = m.get(path)
        assert f is not None
        assert f.link == target
        assert f.size == 0
        assert f.sha256 == sha(target.encode())
        assert f.mode == 0o777
    assert m.blob_hashes() == {sha(b"binary"), sha(b"assets")}


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("evil", "/etc/passwd"),
        ("sub/evil", "/"),
        ("sub/evil", "../../outside.txt"),
        ("evil", ".."),
        ("a/b/evil", "../../../outside.txt"),
    ],
)
def test_scan_refuses_a_link_out_of_the_tree(build: Path, link: str, target: str) -> None:
    put(build, "ok.txt", b"fine")
    (build / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, build / link)
    with pytest.raises(UnsafePath) as info:
        scan(build)
    assert info.value.path == link
    assert "outside" in info.value.reason


def test_scan_refuses_an_absolute_link_even_into_the_tree(build: Path) -> None:
    target = put(build, "real.txt", b"x")
    os.symlink(target, build / "abs")  # absolute: breaks when the build is moved
    with pytest.raises(UnsafePath) as info:
        scan(build)
    assert info.value.path == "abs"


def test_scan_refuses_a_link_that_escapes_through_another_link(build: Path) -> None:
    put(build, "d/e/file", b"x")
    # Each link alone looks fine on paper: "d/e/up" -> ".." is the directory "d", and
    # "esc" -> "d/e/up/../.." normalises to "d". But on disk "d/e/up" is already "d", so
    # "esc" climbs two levels above "d": out of the build.
    os.symlink("..", build / "d" / "e" / "up")
    os.symlink("d/e/up/../..", build / "esc")
    with pytest.raises(UnsafePath) as info:
        scan(build)
    assert info.value.path == "esc"
    assert "resolves outside" in info.value.reason


def test_scan_through_a_linked_build_directory_accepts_inner_links(
    build: Path, tmp_path: Path
) -> None:
    # CI often hands over a path like "current -> build-123": links inside it are judged
    # against the real directory, not refused because the root itself is a link.
    put(build, "a/file", b"x")
    os.symlink("file", build / "a" / "l")
    alias = tmp_path / "current"
    os.symlink(build, alias)
    m = scan(alias)
    assert m == scan(build)
    link = m.get("a/l")
    assert link is not None
    assert link.link == "file"


# -- names and file kinds ------------------------------------------------------------------


def test_scan_refuses_a_file_name_that_is_not_utf8(build: Path) -> None:
    put(build, "good.txt", b"x")
    fd = os.open(os.path.join(os.fsencode(build), b"bad\xff.txt"), os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    with pytest.raises(UnsafePath) as info:
        scan(build)
    assert "UTF-8" in info.value.reason
    assert info.value.path.startswith("bad")


def test_scan_refuses_a_directory_name_that_is_not_utf8(build: Path) -> None:
    bad_dir = os.path.join(os.fsencode(build), b"dir\xc3(")
    os.mkdir(bad_dir)
    fd = os.open(os.path.join(bad_dir, b"inner.txt"), os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    with pytest.raises(UnsafePath) as info:
        scan(build)
    assert "UTF-8" in info.value.reason


def test_scan_refuses_a_link_target_that_is_not_utf8(build: Path) -> None:
    put(build, "good.txt", b"x")
    os.symlink(b"target\xff", os.path.join(os.fsencode(build), b"link"))
    with pytest.raises(UnsafePath) as info:
        scan(build)
    assert info.value.path == "link"
    assert "UTF-8" in info.value.reason


@pytest.mark.parametrize("name", ["bad\nname", "tab\there", "bell\x07"])
def test_scan_refuses_control_characters_in_names(build: Path, name: str) -> None:
    put(build, name, b"x")
    with pytest.raises(UnsafePath, match="control character"):
        scan(build)


def test_scan_refuses_a_backslash_in_a_name(build: Path) -> None:
    put(build, "win\\style.txt", b"x")
    with pytest.raises(UnsafePath, match="backslash"):
        scan(build)


def test_scan_refuses_a_fifo(build: Path) -> None:
    put(build, "ok.txt", b"x")
    (build / "sub").mkdir()
    os.mkfifo(build / "sub" / "pipe")  # scan must refuse it without opening it (would block)
    with pytest.raises(InvalidInput, match="not a regular file") as info:
        scan(build)
    assert not isinstance(info.value, UnsafePath)
    assert info.value.facts["path"] == "sub/pipe"


def test_scan_refuses_a_socket(build: Path) -> None:
    put(build, "ok.txt", b"x")
    # A listening Unix socket, as a game server might leave in its directory; bound by a
    # relative name, since a socket's path is limited to 108 bytes and tmp_path may be longer.
    listener = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    try:
        os.chdir(build)
        listener.bind("sock")
    finally:
        os.chdir(cwd)
    with listener:
        assert stat.S_ISSOCK(os.lstat(build / "sock").st_mode)
        with pytest.raises(InvalidInput, match="not a regular file") as info:
            scan(build)
    assert info.value.facts["path"] == "sock"


def test_walk_returns_sorted_paths_with_lstat(build: Path) -> None:
    put(build, "b/2", b"22")
    put(build, "a", b"1")
    put(build, "b/1", b"333")
    os.symlink("a", build / "c")
    found = walk(build)
    assert [rel for rel, _ in found] == ["a", "b/1", "b/2", "c"]
    sizes = {rel: st.st_size for rel, st in found}
    assert sizes["b/1"] == 3
    assert stat.S_ISLNK(dict(found)["c"].st_mode)
