"""Unit tests for ``changeover.content.diff``: what an update changes and what it costs."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from changeover.content.diff import Change, DiffReport, FileChange, Totals, analyse
from changeover.content.manifest import FileEntry, Manifest

PROPERTY = settings(derandomize=True, deadline=None, database=None, max_examples=100)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fe(path: str, data: bytes, mode: int = 0o644) -> FileEntry:
    return FileEntry(path, len(data), sha(data), mode=mode)


def link(path: str, target: str) -> FileEntry:
    return FileEntry(path, 0, sha(target.encode()), mode=0o777, link=target)


def m(*files: FileEntry) -> Manifest:
    return Manifest.of(files)


def kinds(report: DiffReport) -> dict[str, Change]:
    return {c.path: c.change for c in report.changes}


# -- first version -------------------------------------------------------------------------


def test_first_version_is_all_added() -> None:
    new = m(fe("a", b"aaaa"), fe("b/c", b"cc", 0o755), fe("dup", b"aaaa"), link("l", "a"))
    r = analyse(None, new)
    assert kinds(r) == {
        "a": Change.ADDED,
        "b/c": Change.ADDED,
        "dup": Change.ADDED,
        "l": Change.ADDED,
    }
    assert r.totals[Change.ADDED] == Totals(files=4, bytes=4 + 2 + 4 + 0)
    for kind in (Change.CHANGED, Change.REMOVED, Change.UNCHANGED):
        assert r.totals[kind] == Totals(0, 0)
    assert r.old_bytes == 0
    assert r.new_bytes == new.total_bytes == 10
    # "aaaa" is downloaded once for both paths; the link needs no download.
    assert r.download_bytes == 4 + 2
    for c in r.changes:
        assert c.old_size is None
        assert c.old_sha256 is None
        assert c.new_sha256 == new.get(c.path).sha256  # type: ignore[union-attr]


def test_first_version_download_uses_stored_sizes() -> None:
    new = m(fe("a", b"a" * 1000), fe("b", b"b" * 10))
    r = analyse(None, new, {sha(b"a" * 1000): 17})
    assert r.download_bytes == 17 + 10  # "b" is not in the map: counted at its raw size


# -- classification ------------------------------------------------------------------------


def _old_and_new() -> tuple[Manifest, Manifest]:
    old = m(
        fe("same.txt", b"same"),
        fe("content.bin", b"version one"),
        fe("bin/run", b"#!/bin/sh", 0o644),
        fe("gone/file", b"bye bye"),
        fe("gone/link-target", b"t"),
        link("current", "v1"),
        link("stable", "same.txt"),
    )
    new = m(
        fe("same.txt", b"same"),
        fe("content.bin", b"version two!"),
        fe("bin/run", b"#!/bin/sh", 0o755),  # only the mode changed
        fe("new/asset.pak", b"brand new"),
        link("current", "v2"),
        link("stable", "same.txt"),
    )
    return old, new


def test_classifies_added_changed_removed_unchanged() -> None:
    old, new = _old_and_new()
    r = analyse(old, new)
    assert kinds(r) == {
        "bin/run": Change.CHANGED,
        "content.bin": Change.CHANGED,
        "current": Change.CHANGED,
        "gone/file": Change.REMOVED,
        "gone/link-target": Change.REMOVED,
        "new/asset.pak": Change.ADDED,
        "same.txt": Change.UNCHANGED,
        "stable": Change.UNCHANGED,
    }
    assert [c.path for c in r.changes] == sorted(kinds(r))


def test_mode_only_change_is_a_change_that_downloads_nothing() -> None:
    old = m(fe("bin/run", b"#!", 0o644))
    new = m(fe("bin/run", b"#!", 0o755))
    r = analyse(old, new)
    (c,) = r.changes
    assert c == FileChange("bin/run", Change.CHANGED, 2, 2, sha(b"#!"), sha(b"#!"))
    assert r.download_bytes == 0


def test_file_change_records_old_and_new_facts() -> None:
    old, new = _old_and_new()
    by_path = {c.path: c for c in analyse(old, new).changes}
    assert by_path["content.bin"] == FileChange(
        "content.bin", Change.CHANGED, 11, 12, sha(b"version one"), sha(b"version two!")
    )
    assert by_path["gone/file"] == FileChange(
        "gone/file", Change.REMOVED, 7, None, sha(b"bye bye"), None
    )
    assert by_path["new/asset.pak"] == FileChange(
        "new/asset.pak", Change.ADDED, None, 9, None, sha(b"brand new")
    )
    assert by_path["same.txt"] == FileChange(
        "same.txt", Change.UNCHANGED, 4, 4, sha(b"same"), sha(b"same")
    )


def test_a_file_that_becomes_a_link_is_changed() -> None:
    old = m(fe("x", b"x"), fe("data", b"payload"))
    new = m(fe("x", b"x"), link("data", "x"))
    assert kinds(analyse(old, new))["data"] is Change.CHANGED


def test_totals_per_kind() -> None:
    old, new = _old_and_new()
    r = analyse(old, new)
    assert r.totals == {
        # changed bytes are the new sizes: content.bin 12 + bin/run 9 + link 0
        Change.CHANGED: Totals(3, 12 + 9 + 0),
        Change.ADDED: Totals(1, 9),
        Change.REMOVED: Totals(2, 7 + 1),  # removed bytes are the old sizes
        Change.UNCHANGED: Totals(2, 4 + 0),
    }
    assert r.old_bytes == old.total_bytes
    assert r.new_bytes == new.total_bytes


def test_identical_manifests_are_all_unchanged() -> None:
    old, _ = _old_and_new()
    r = analyse(old, old)
    assert set(kinds(r).values()) == {Change.UNCHANGED}
    assert r.totals[Change.UNCHANGED] == Totals(len(old), old.total_bytes)
    assert r.download_bytes == 0


# -- download size -------------------------------------------------------------------------


def test_download_counts_only_content_the_old_version_lacks() -> None:
    old, new = _old_and_new()
    r = analyse(old, new)
    assert r.download_bytes == len(b"version two!") + len(b"brand new")


def test_download_uses_stored_sizes_and_falls_back_to_raw_size() -> None:
    old, new = _old_and_new()
    stored = {sha(b"version two!"): 5, sha(b"same"): 1000, sha(b"unrelated"): 999}
    r = analyse(old, new, stored)
    assert r.download_bytes == 5 + len(b"brand new")


def test_download_counts_each_hash_once() -> None:
    blob = b"shared texture" * 10
    new = m(fe("a/tex", blob), fe("b/tex", blob), fe("c/tex", blob, 0o755))
    assert analyse(m(fe("old", b"o")), new).download_bytes == len(blob)
    assert analyse(None, new, {sha(blob): 3}).download_bytes == 3


def test_a_pure_rename_downloads_nothing() -> None:
    data = b"a big asset" * 100
    old = m(fe("old/name.pak", data), fe("keep", b"k"))
    new = m(fe("new/name.pak", data), fe("keep", b"k"))
    r = analyse(old, new, {sha(data): 500})
    assert kinds(r) == {
        "keep": Change.UNCHANGED,
        "new/name.pak": Change.ADDED,
        "old/name.pak": Change.REMOVED,
    }
    assert r.download_bytes == 0
    assert r.totals[Change.ADDED] == Totals(1, len(data))


def test_content_held_under_another_path_is_free() -> None:
    old = m(fe("a", b"AAA"), fe("b", b"BBB"))
    new = m(fe("a", b"BBB"), fe("b", b"AAA"), fe("c", b"AAA"))  # swapped and copied
    r = analyse(old, new)
    assert kinds(r) == {"a": Change.CHANGED, "b": Change.CHANGED, "c": Change.ADDED}
    assert r.download_bytes == 0


def test_links_are_never_downloaded() -> None:
    old = m(fe("a", b"1"))
    new = m(fe("a", b"1"), link("l1", "a"), link("l2", "elsewhere"))
    stored = {sha(b"a"): 100, sha(b"elsewhere"): 100}
    r = analyse(old, new, stored)
    assert r.download_bytes == 0
    assert r.totals[Change.ADDED] == Totals(2, 0)


def test_content_only_known_as_a_link_target_is_still_downloaded() -> None:
    # A link's sha256 is the hash of its target text; that is not a blob a host holds.
    old = m(fe("a", b"1"), link("l", "a"))
    new = m(fe("a", b"1"), link("l", "a"), fe("copy", b"a"))
    r = analyse(old, new)
    assert r.download_bytes == 1


def test_removals_download_nothing() -> None:
    old = m(fe("a", b"1"), fe("b", b"22"))
    r = analyse(old, m(fe("a", b"1")))
    assert r.download_bytes == 0
    assert r.totals[Change.REMOVED] == Totals(1, 2)


# -- to_dict -------------------------------------------------------------------------------


def test_to_dict_with_and_without_unchanged() -> None:
    old, new = _old_and_new()
    r = analyse(old, new, {sha(b"version two!"): 5})
    d = r.to_dict()
    assert d["totals"] == {
        "added": {"files": 1, "bytes": 9},
        "changed": {"files": 3, "bytes": 21},
        "removed": {"files": 2, "bytes": 8},
        "unchanged": {"files": 2, "bytes": 4},
    }
    assert d["old_bytes"] == old.total_bytes
    assert d["new_bytes"] == new.total_bytes
    assert d["download_bytes"] == 5 + 9
    files = d["files"]
    assert [f["path"] for f in files] == [c.path for c in r.changes]
    assert {"path": "gone/file", "change": "removed", "old_size": 7, "new_size": None} in files
    assert {"path": "new/asset.pak", "change": "added", "old_size": None, "new_size": 9} in files
    assert {"path": "same.txt", "change": "unchanged", "old_size": 4, "new_size": 4} in files
    assert {"path": "bin/run", "change": "changed", "old_size": 9, "new_size": 9} in files
    assert json.loads(json.dumps(d)) == d  # plain JSON types only

    short = r.to_dict(include_unchanged=False)
    assert [f["path"] for f in short["files"]] == [
        c.path for c in r.changes if c.change is not Change.UNCHANGED
    ]
    assert all(f["change"] != "unchanged" for f in short["files"])
    assert len(short["files"]) == len(d["files"]) - 2
    # The totals still report the unchanged files.
    assert short["totals"] == d["totals"]
    assert {k: v for k, v in short.items() if k != "files"} == {
        k: v for k, v in d.items() if k != "files"
    }


def test_change_values_are_strings() -> None:
    assert [c.value for c in Change] == ["added", "changed", "removed", "unchanged"]
    assert str(Change.ADDED) == "added"


# -- properties ----------------------------------------------------------------------------

# Paths from a small pool so that old and new overlap often; none is a directory of another.
PATHS = ["a", "b", "c/d", "c/e", "f/g/h", "f/i"]
CONTENTS = [b"", b"x", b"yy", b"zzz", b"wwww"]


@st.composite
def entries(draw: st.DrawFn, path: str) -> FileEntry:
    if draw(st.integers(0, 4)) == 0:
        return link(path, draw(st.sampled_from(["t1", "t2"])))
    return fe(path, draw(st.sampled_from(CONTENTS)), draw(st.sampled_from([0o644, 0o755])))


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    paths = draw(st.lists(st.sampled_from(PATHS), unique=True))
    return Manifest.of([draw(entries(p)) for p in paths])


STORED = st.dictionaries(st.sampled_from([sha(c) for c in CONTENTS]), st.integers(0, 50))


@PROPERTY
@given(st.none() | manifests(), manifests(), st.none() | STORED)
def test_property_every_path_once_and_counts_add_up(
    old: Manifest | None, new: Manifest, stored: dict[str, int] | None
) -> None:
    r = analyse(old, new, stored)
    old_files = {f.path: f for f in old} if old is not None else {}
    new_files = {f.path: f for f in new}

    paths = [c.path for c in r.changes]
    assert paths == sorted(set(old_files) | set(new_files))  # each path exactly once, sorted

    t = r.totals
    assert set(t) == set(Change)
    assert sum(v.files for v in t.values()) == len(paths)
    assert t[Change.ADDED].files + t[Change.CHANGED].files + t[Change.UNCHANGED].files == len(new)
    assert t[Change.REMOVED].files + t[Change.CHANGED].files + t[Change.UNCHANGED].files == len(
        old_files
    )
    assert t[Change.ADDED].bytes + t[Change.CHANGED].bytes + t[Change.UNCHANGED].bytes == (
        new.total_bytes
    )
    assert t[Change.REMOVED].bytes == sum(
        f.size for p, f in old_files.items() if p not in new_files
    )
    assert r.new_bytes == new.total_bytes
    assert r.old_bytes == sum(f.size for f in old_files.values())

    for c in r.changes:
        before, after = old_files.get(c.path), new_files.get(c.path)
        if before is None:
            assert c.change is Change.ADDED
        elif after is None:
            assert c.change is Change.REMOVED
        elif (before.sha256, before.mode, before.link) == (after.sha256, after.mode, after.link):
            assert c.change is Change.UNCHANGED
        else:
            assert c.change is Change.CHANGED

    have = {f.sha256 for f in old_files.values() if f.link is None}
    size_of = {f.sha256: f.size for f in new if f.link is None}
    want = set(size_of) - have
    assert r.download_bytes == sum((stored or {}).get(h, size_of[h]) for h in want)
    if stored is None:
        assert 0 <= r.download_bytes <= new.total_bytes

    d = r.to_dict(include_unchanged=False)
    assert len(d["files"]) == len(paths) - t[Change.UNCHANGED].files


@PROPERTY
@given(manifests())
def test_property_a_manifest_against_itself_is_unchanged_and_free(new: Manifest) -> None:
    r = analyse(new, new)
    assert all(c.change is Change.UNCHANGED for c in r.changes)
    assert r.download_bytes == 0
    assert r.totals[Change.UNCHANGED] == Totals(len(new), new.total_bytes)
