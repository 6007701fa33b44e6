"""Unit tests for ``changeover.content.bases``: which old files a new file is patched from."""

from __future__ import annotations

import hashlib
import random

import pytest

from changeover.content.bases import choose_bases, normalize_name
from changeover.content.manifest import FileEntry, Manifest


def sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def entry(path: str, tag: str, size: int = 1000, link: str | None = None) -> FileEntry:
    return FileEntry(path, 0 if link else size, sha(tag), link=link)


def manifest(*files: FileEntry) -> Manifest:
    return Manifest.of(files)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("libfoo-3f2a9c.so", ("libfoo", "so")),
        ("libfoo-8b1d22.so", ("libfoo", "so")),
        ("libfoo.so.1.2.3", ("libfoo", "so")),
        ("app.8b1d22f0.js", ("app", "js")),
        ("Game_v1.2.pak", ("game", "pak")),
        ("chunk-a1b2c3d4e5.pak", ("chunk", "pak")),
        ("UnityPlayer.dll", ("unityplayer", "dll")),
        ("README", ("readme", "")),
        ("12345.bin", ("", "bin")),
        ("x64.dll", ("x64", "dll")),
    ],
)
def test_normalize_name(name: str, expected: tuple[str, str]) -> None:
    assert normalize_name(name) == expected


def test_same_path_in_each_version_most_recent_first() -> None:
    new = entry("bin/game.exe", "v4")
    olds = [
        manifest(entry("bin/game.exe", "v3")),
        manifest(entry("bin/game.exe", "v2")),
        manifest(entry("bin/game.exe", "v1")),
    ]
    assert [b.sha256 for b in choose_bases(new, olds)] == [sha("v3"), sha("v2"), sha("v1")]
    assert [b.sha256 for b in choose_bases(new, olds, limit=2)] == [sha("v3"), sha("v2")]


def test_bases_are_distinct_contents() -> None:
    new = entry("data.pak", "new")
    olds = [manifest(entry("data.pak", "a")), manifest(entry("data.pak", "a"))]
    assert [b.sha256 for b in choose_bases(new, olds)] == [sha("a")]


def test_version_that_already_has_the_content_offers_no_base() -> None:
    new = entry("data.pak", "same")
    olds = [
        manifest(entry("data.pak", "same")),  # unchanged
        manifest(entry("moved/data.pak", "same"), entry("data.pak", "x")),  # a copy suffices
        manifest(entry("data.pak", "older")),
    ]
    assert [b.sha256 for b in choose_bases(new, olds)] == [sha("older")]


def test_renamed_library_gets_its_old_self_as_base() -> None:
    new = entry("lib/libfoo-8b1d22.so", "foo2", size=5_000_000)
    old = manifest(
        entry("lib/libfoo-3f2a9c.so", "foo1", size=4_900_000),
        entry("lib/libbar-3f2a9c.so", "bar1", size=5_000_000),
        entry("lib/libfoo.txt", "notes", size=5_000_000),
    )
    assert [b.path for b in choose_bases(new, [old])] == ["lib/libfoo-3f2a9c.so"]


def test_versioned_names_and_directories_match() -> None:
    old = manifest(
        entry("lib/libssl.so.1.1", "ssl1"),
        entry("content/1.2.0/world.pak", "world1"),
    )
    assert choose_bases(entry("lib/libssl.so.1.2", "ssl2"), [old])[0].path == "lib/libssl.so.1.1"
    assert (
        choose_bases(entry("content/1.3.0/world.pak", "world2"), [old])[0].path
        == "content/1.2.0/world.pak"
    )


def test_moved_file_found_in_another_directory() -> None:
    old = manifest(entry("old_dir/textures.pak", "t1"), entry("other/sound.bank", "s"))
    assert [b.path for b in choose_bases(entry("new_dir/textures.pak", "t2"), [old])] == [
        "old_dir/textures.pak"
    ]


def test_similar_names_in_same_directory_match_by_similarity() -> None:
    old = manifest(
        entry("levels/forest_day.pak", "fd", size=900),
        entry("levels/desert.pak", "d", size=1000),
    )
    found = choose_bases(entry("levels/forest_night.pak", "fn", size=1000), [old])
    assert [b.path for b in found] == ["levels/forest_day.pak"]
    assert choose_bases(entry("levels/ocean.pak", "o"), [old]) == []
    # Different extension: not a candidate, however close the name.
    assert choose_bases(entry("levels/forest_day.txt", "fdt"), [old]) == []


def test_ties_go_to_the_closest_size() -> None:
    old = manifest(
        entry("assets/tex_0001.dds", "a", size=100),
        entry("assets/tex_0002.dds", "b", size=2000),
        entry("assets/tex_0003.dds", "c", size=5000),
    )
    found = choose_bases(entry("assets/tex_0004.dds", "d", size=2100), [old])
    assert [b.path for b in found] == ["assets/tex_0002.dds"]


def test_links_and_empty_files_are_never_bases() -> None:
    old = manifest(
        entry("a.so", "target", link="b.so"),
        entry("b.so", "b"),
        entry("empty.dat", "", size=0),
    )
    assert choose_bases(entry("a.so", "new"), [old]) == []
    assert choose_bases(entry("empty.dat", "x"), [old]) == []
    assert choose_bases(entry("c.so", "t", link="b.so"), [old]) == []


def test_deterministic_whatever_the_input_order() -> None:
    rng = random.Random(1)
    files = [entry(f"pak/chunk_{i:04d}-{rng.getrandbits(32):08x}.pak", str(i)) for i in range(50)]
    new = entry("pak/chunk_0100-deadbee1.pak", "new")
    expected = choose_bases(new, [Manifest.of(files)])
    for _ in range(5):
        rng.shuffle(files)
        assert choose_bases(new, [Manifest.of(files)]) == expected
    assert len(expected) == 1
