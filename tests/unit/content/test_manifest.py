"""Unit tests for ``changeover.content.manifest``: path rules, entries, manifests, JSON."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changeover.content.manifest import (
    FORMAT,
    MAX_COMPONENT_BYTES,
    MAX_PATH_BYTES,
    FileEntry,
    Manifest,
    check_link,
    check_path,
    check_sha256,
)
from changeover.errors import ChangeoverError, InvalidInput, UnsafePath

# Deterministic property tests: the same examples on every run, no example database.
PROPERTY = settings(derandomize=True, deadline=None, database=None, max_examples=60)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(path: str, data: bytes = b"x", mode: int = 0o644, link: str | None = None) -> FileEntry:
    if link is not None:
        return FileEntry(path, 0, sha(link.encode()), mode=0o777, link=link)
    return FileEntry(path, len(data), sha(data), mode=mode)


# -- check_path ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "a",
        "a.txt",
        "a/b/c.txt",
        ".hidden",
        "dir/.config/settings.ini",
        "..a",
        "a..",
        "...",
        "with space/and-dash_under.score",
        "ünïcödé/файл.bin",
        "日本/語/テスト.pak",
        "emoji/🎮.dat",
        "C",
        "C_/x",
        "1:/x",
        "x" * MAX_COMPONENT_BYTES,
        "é" * (MAX_COMPONENT_BYTES // 2),
    ],
)
def test_check_path_accepts_ordinary_relative_paths(path: str) -> None:
    assert check_path(path) == path


def test_check_path_length_limit_is_inclusive() -> None:
    # 15 names of 255 bytes, two more of 200 and 55, and 16 slashes: exactly 4096 bytes.
    path = "/".join(["d" * 255] * 15 + ["e" * 200, "f" * 55])
    assert len(path.encode()) == MAX_PATH_BYTES
    assert check_path(path) == path
    with pytest.raises(UnsafePath, match=f"longer than {MAX_PATH_BYTES}"):
        check_path(path + "g")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("/", "absolute"),
        ("//server/share", "absolute"),
        ("C:/Windows/system32", "absolute"),
        ("c:relative", "absolute"),
        ("Z:\\x", "absolute"),
        ("a\\b", "backslash"),
        ("..\\evil", "backslash"),
        ("a\x00b", "control character"),
        ("a\nb", "control character"),
        ("a\rb", "control character"),
        ("\tname", "control character"),
        ("a\x1fb", "control character"),
        ("a\x7fb", "control character"),
        ("..", "'..'"),
        ("../a", "'..'"),
        ("a/..", "'..'"),
        ("a/../b", "'..'"),
        (".", "'.'"),
        ("./a", "'.'"),
        ("a/./b", "'.'"),
        ("a/", "''"),
        ("a//b", "''"),
        ("bad\udcff.txt", "UTF-8"),
        ("dir\udc80/file", "UTF-8"),
        ("x" * (MAX_COMPONENT_BYTES + 1), f"longer than {MAX_COMPONENT_BYTES} bytes"),
        # 128 two-byte characters: 128 characters but 256 bytes.
        ("é" * 128, f"longer than {MAX_COMPONENT_BYTES} bytes"),
        ("ok/" + "y" * 300 + "/ok", f"longer than {MAX_COMPONENT_BYTES} bytes"),
    ],
)
def test_check_path_refuses_unsafe_paths(path: str, reason: str) -> None:
    with pytest.raises(UnsafePath) as info:
        check_path(path)
    err = info.value
    assert err.path == path
    assert reason in err.reason
    assert err.facts == {"path": path, "reason": err.reason}
    assert err.to_dict()["error"] == "unsafe_path"
    assert isinstance(err, InvalidInput)
    assert isinstance(err, ChangeoverError)


def test_check_path_refuses_an_overlong_path_and_shortens_it_in_the_error() -> None:
    path = "/".join(["a" * 200] * 21)  # every name is fine, the whole is > 4096 bytes
    assert len(path.encode()) > MAX_PATH_BYTES
    with pytest.raises(UnsafePath) as info:
        check_path(path)
    assert f"longer than {MAX_PATH_BYTES} bytes" in info.value.reason
    assert info.value.path == path[:80] + "..."
    assert len(str(info.value)) < 300


def test_check_path_refuses_overlong_multibyte_path() -> None:
    # Under the limit in characters, over it in UTF-8 bytes.
    path = "/".join(["ж" * 100] * 21)
    assert len(path) < MAX_PATH_BYTES < len(path.encode())
    with pytest.raises(UnsafePath, match="longer than"):
        check_path(path)


# -- check_sha256 --------------------------------------------------------------------------


def test_check_sha256_accepts_lowercase_hex() -> None:
    digest = sha(b"abc")
    assert check_sha256(digest) == digest


@pytest.mark.parametrize(
    "value",
    [
        "",
        "abc",
        "A" * 64,
        sha(b"x").upper(),
        "g" * 64,
        sha(b"x") + "0",
        " " + sha(b"x")[1:],
        sha(b"x") + "\n",  # a regex's $ would let this one through
    ],
)
def test_check_sha256_refuses_anything_else(value: str) -> None:
    with pytest.raises(InvalidInput, match="64 lowercase hex") as info:
        check_sha256(value, "blob id")
    assert "blob id" in str(info.value)
    assert not isinstance(info.value, UnsafePath)


@pytest.mark.parametrize("value", [None, 123, b"0" * 64, ["0" * 64]])
def test_check_sha256_refuses_non_strings(value: Any) -> None:
    with pytest.raises(InvalidInput):
        check_sha256(value)


# -- check_link ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("l", "a.txt"),
        ("l", "sub/dir/file"),
        ("a/l", "b"),
        ("a/l", "../b"),
        ("a/b/l", "../../c"),
        ("a/l", "."),  # the directory holding the link
        ("a/b/l", ".."),  # resolves to "a", still inside
        ("l", "x/../y"),
        ("l", "missing"),  # dangling but inside: allowed
    ],
)
def test_check_link_accepts_relative_targets_inside_the_tree(path: str, target: str) -> None:
    assert check_link(path, target) == target


@pytest.mark.parametrize(
    ("path", "target", "reason"),
    [
        ("l", "/etc/passwd", "outside"),
        ("a/l", "/abs/inside/looking", "outside"),
        ("l", "", "outside"),
        ("l", "..", "outside"),
        ("l", "../x", "outside"),
        ("a/l", "../../x", "outside"),
        ("a/b/l", "../../../x", "outside"),
        ("a/l", "..", "outside"),  # the root itself
        ("l", ".", "outside"),
        ("l", "x/../..", "outside"),
        ("l", "x/../../y", "outside"),
        ("l", "x\udcff", "UTF-8"),
        ("l", "a\x00b", "NUL"),
    ],
)
def test_check_link_refuses_targets_outside_the_tree(path: str, target: str, reason: str) -> None:
    with pytest.raises(UnsafePath) as info:
        check_link(path, target)
    assert info.value.path == path
    assert reason in info.value.reason


# -- FileEntry -----------------------------------------------------------------------------


def test_file_entry_defaults_and_executable_bit() -> None:
    plain = FileEntry("a.txt", 3, sha(b"abc"))
    assert plain.mode == 0o644
    assert plain.link is None
    assert not plain.executable
    assert FileEntry("run.sh", 3, sha(b"abc"), mode=0o755).executable
    assert FileEntry("run.sh", 3, sha(b"abc"), mode=0o100).executable
    assert not FileEntry("ro", 3, sha(b"abc"), mode=0o400).executable


def test_file_entry_is_immutable() -> None:
    f = entry("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.size = 5  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["", "abc", "F" * 64, "z" * 64, None, 42])
def test_file_entry_refuses_a_bad_sha(bad: Any) -> None:
    with pytest.raises(InvalidInput, match=r"sha256 of a\.txt"):
        FileEntry("a.txt", 1, bad)


@pytest.mark.parametrize("bad", [-1, -(2**70), True, False, 1.0, "1", None])
def test_file_entry_refuses_a_bad_size(bad: Any) -> None:
    with pytest.raises(InvalidInput, match=r"size of a\.txt"):
        FileEntry("a.txt", bad, sha(b"x"))


@pytest.mark.parametrize("size", [0, 1, 2**40, 2**63])
def test_file_entry_accepts_any_non_negative_size(size: int) -> None:
    assert FileEntry("a", size, sha(b"")).size == size


@pytest.mark.parametrize("bad", [-1, 0o10000, 0o100644, "644", 6.44, None, True, False])
def test_file_entry_refuses_a_bad_mode(bad: Any) -> None:
    with pytest.raises(InvalidInput, match=r"mode of a\.txt"):
        FileEntry("a.txt", 1, sha(b"x"), mode=bad)


@pytest.mark.parametrize("mode", [0, 0o600, 0o755, 0o4755, 0o7777])
def test_file_entry_accepts_permission_numbers(mode: int) -> None:
    assert FileEntry("a", 1, sha(b"x"), mode=mode).mode == mode


def test_file_entry_refuses_an_unsafe_path() -> None:
    with pytest.raises(UnsafePath) as info:
        FileEntry("../escape", 1, sha(b"x"))
    assert info.value.path == "../escape"


@pytest.mark.parametrize("target", ["/etc/shadow", "../../out", ".."])
def test_file_entry_refuses_a_link_out_of_the_tree(target: str) -> None:
    with pytest.raises(UnsafePath) as info:
        FileEntry("dir/l", 0, sha(target.encode()), mode=0o777, link=target)
    assert info.value.path == "dir/l"


def test_file_entry_to_dict_and_from_dict() -> None:
    f = FileEntry("bin/run", 7, sha(b"#!/bin/sh"), mode=0o755)
    assert f.to_dict() == {"path": "bin/run", "size": 7, "sha256": sha(b"#!/bin/sh"), "mode": 0o755}
    assert FileEntry.from_dict(f.to_dict()) == f
    link = entry("bin/current", link="run")
    assert link.to_dict()["link"] == "run"
    assert FileEntry.from_dict(link.to_dict()) == link


def test_file_entry_from_dict_defaults_the_mode() -> None:
    f = FileEntry.from_dict({"path": "a", "size": 1, "sha256": sha(b"x")})
    assert f.mode == 0o644
    assert f.link is None


# -- Manifest ------------------------------------------------------------------------------


def test_manifest_sorts_files_by_path() -> None:
    files = [entry("z"), entry("a/b"), entry("B"), entry("a/a"), entry("é"), entry("a.txt")]
    m = Manifest.of(files)
    paths = [f.path for f in m]
    assert paths == sorted(f.path for f in files)
    assert paths == ["B", "a.txt", "a/a", "a/b", "z", "é"]
    assert m.files == tuple(m)
    assert len(m) == 6


def test_manifest_equality_and_id_ignore_input_order() -> None:
    files = [entry("c", b"3"), entry("a", b"1"), entry("b/x", b"2")]
    m1 = Manifest.of(files)
    m2 = Manifest.of(reversed(files))
    assert m1 == m2
    assert m1.id == m2.id
    assert m1.canonical_bytes() == m2.canonical_bytes()


def test_manifest_get() -> None:
    a = entry("dir/a", b"aaa")
    m = Manifest.of([a, entry("b")])
    assert m.get("dir/a") == a
    assert m.get("dir") is None
    assert m.get("missing") is None


def test_manifest_refuses_duplicate_paths() -> None:
    with pytest.raises(InvalidInput, match="duplicate path") as info:
        Manifest.of([entry("x/a", b"1"), entry("b"), entry("x/a", b"2")])
    assert info.value.facts["path"] == "x/a"


@pytest.mark.parametrize(
    ("paths", "clash"),
    [
        (["a", "a/b"], "a"),
        (["a/b", "a"], "a"),
        (["d/e", "d/e/f/g"], "d/e"),
        (["top", "top/mid/leaf", "other"], "top"),
    ],
)
def test_manifest_refuses_a_path_that_is_both_file_and_directory(
    paths: list[str], clash: str
) -> None:
    with pytest.raises(InvalidInput, match="both a file and a directory") as info:
        Manifest.of([entry(p) for p in paths])
    assert info.value.facts["path"] == clash


def test_manifest_refuses_a_link_that_is_also_a_directory() -> None:
    with pytest.raises(InvalidInput, match="both a file and a directory"):
        Manifest.of([entry("cur", link="v1"), entry("cur/x")])


def test_manifest_allows_names_that_merely_share_a_prefix() -> None:
    m = Manifest.of([entry("a"), entry("ab/c"), entry("a.d/e"), entry("a-b")])
    assert len(m) == 4


def test_manifest_totals_and_blob_hashes() -> None:
    m = Manifest.of(
        [
            entry("a", b"same"),
            entry("b", b"same"),  # duplicate content: one blob
            entry("c", b"other!"),
            entry("d", b""),
            entry("l", link="a"),  # links carry no blob
        ]
    )
    assert m.total_bytes == 4 + 4 + 6 + 0 + 0
    assert m.blob_hashes() == {sha(b"same"), sha(b"other!"), sha(b"")}


def test_manifest_to_dict_and_canonical_bytes() -> None:
    m = Manifest.of([entry("b", b"12", mode=0o755), entry("a", link="b")])
    d = m.to_dict()
    assert d == {
        "format": FORMAT,
        "files": [
            {"path": "a", "size": 0, "sha256": sha(b"b"), "mode": 0o777, "link": "b"},
            {"path": "b", "size": 2, "sha256": sha(b"12"), "mode": 0o755},
        ],
    }
    raw = m.canonical_bytes()
    assert json.loads(raw) == d
    assert raw == json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    assert b" " not in raw
    assert raw.index(b'"files"') < raw.index(b'"format"')  # keys sorted


def test_manifest_id_is_the_sha256_of_its_canonical_json() -> None:
    m = Manifest.of([entry("a", b"1"), entry("b", b"2")])
    assert m.id == hashlib.sha256(m.canonical_bytes()).hexdigest()
    assert m.id == Manifest.of([entry("b", b"2"), entry("a", b"1")]).id
    assert len(m.id) == 64
    check_sha256(m.id)


def test_manifest_id_changes_with_any_field() -> None:
    base = [entry("dir/a", b"aaa"), entry("b", b"bb", mode=0o755), entry("l", link="b")]

    def with_first(**changes: Any) -> Manifest:
        return Manifest.of([dataclasses.replace(base[0], **changes), *base[1:]])

    variants = {
        "base": Manifest.of(base),
        "path": with_first(path="dir/a2"),
        "size": with_first(size=4),
        "sha256": with_first(sha256=sha(b"aab")),
        "mode": with_first(mode=0o600),
        "exec": with_first(mode=0o744),
        "link target": Manifest.of([*base[:2], entry("l", link="dir/a")]),
        "became link": with_first(size=0, sha256=sha(b"b"), mode=0o777, link="../b"),
        "added file": Manifest.of([*base, entry("c")]),
        "removed file": Manifest.of(base[:2]),
        "empty": Manifest.of([]),
    }
    ids = {name: m.id for name, m in variants.items()}
    assert len(set(ids.values())) == len(ids), ids


def test_manifest_json_round_trip_keeps_everything() -> None:
    m = Manifest.of(
        [
            entry("ünï/文件.txt", b"unicode"),
            entry("bin/run", b"#!", mode=0o755),
            entry("bin/latest", link="run"),
            entry("empty", b""),
        ]
    )
    for raw in (m.canonical_bytes(), m.canonical_bytes().decode()):
        back = Manifest.from_json(raw)
        assert back == m
        assert back.id == m.id
    assert Manifest.from_dict(m.to_dict()) == m


def test_manifest_from_json_accepts_a_missing_format_tag() -> None:
    # Clients (and tests_helpers.build_manifest) may send only the files list.
    raw = json.dumps({"files": [entry("a").to_dict()]})
    assert Manifest.from_json(raw) == Manifest.of([entry("a")])


GOOD = {"path": "a", "size": 1, "sha256": sha(b"x"), "mode": 0o644}


def _doc(*files: Any, **top: Any) -> bytes:
    return json.dumps({"format": FORMAT, "files": list(files), **top}).encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"not json", "not valid JSON", id="text"),
        pytest.param(b'{"files": [', "not valid JSON", id="truncated"),
        pytest.param(b"\xff\xfe\x00garbage", "not valid JSON", id="binary"),
        pytest.param(b'{"files": []}\x00', "not valid JSON", id="trailing-nul"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "not valid JSON", id="deep-nesting"),
        pytest.param(b"[]", "'files' list", id="list"),
        pytest.param(b"null", "'files' list", id="null"),
        pytest.param(b"42", "'files' list", id="number"),
        pytest.param(b'"files"', "'files' list", id="string"),
        pytest.param(b"{}", "'files' list", id="no-files"),
        pytest.param(b'{"files": {}}', "'files' list", id="files-object"),
        pytest.param(b'{"files": null}', "'files' list", id="files-null"),
        pytest.param(b'{"files": "a"}', "'files' list", id="files-string"),
        pytest.param(_doc(format="changeover.manifest/2"), "unsupported", id="format-v2"),
        pytest.param(_doc(format=None), "unsupported", id="format-null"),
        pytest.param(_doc(format=1), "unsupported", id="format-number"),
        pytest.param(_doc(format=[FORMAT]), "unsupported", id="format-list"),
        pytest.param(_doc(1), "must be an object", id="entry-number"),
        pytest.param(_doc([]), "must be an object", id="entry-list"),
        pytest.param(_doc(None), "must be an object", id="entry-null"),
        pytest.param(_doc({"size": 1, "sha256": sha(b"x")}), "lacks 'path'", id="no-path"),
        pytest.param(_doc({"path": "a", "sha256": sha(b"x")}), "lacks 'size'", id="no-size"),
        pytest.param(_doc({"path": "a", "size": 1}), "lacks 'sha256'", id="no-sha"),
        pytest.param(_doc({**GOOD, "extra": 1}), "unknown manifest field", id="unknown"),
        pytest.param(_doc({**GOOD, "Path": "a"}), "unknown manifest field", id="unknown-case"),
        pytest.param(_doc({**GOOD, "path": 1}), "path must be a string", id="path-number"),
        pytest.param(_doc({**GOOD, "path": None}), "path must be a string", id="path-null"),
        pytest.param(_doc({**GOOD, "path": ["a"]}), "path must be a string", id="path-list"),
        pytest.param(_doc({**GOOD, "size": "1"}), "size of a", id="size-string"),
        pytest.param(_doc({**GOOD, "size": 1.5}), "size of a", id="size-float"),
        pytest.param(_doc({**GOOD, "size": True}), "size of a", id="size-bool"),
        pytest.param(_doc({**GOOD, "size": -1}), "size of a", id="size-negative"),
        pytest.param(_doc({**GOOD, "size": None}), "size of a", id="size-null"),
        pytest.param(_doc({**GOOD, "sha256": 1}), "sha256 of a", id="sha-number"),
        pytest.param(_doc({**GOOD, "sha256": "abc"}), "sha256 of a", id="sha-short"),
        pytest.param(_doc({**GOOD, "sha256": None}), "sha256 of a", id="sha-null"),
        pytest.param(_doc({**GOOD, "mode": "644"}), "mode of a", id="mode-string"),
        pytest.param(_doc({**GOOD, "mode": None}), "mode of a", id="mode-null"),
        pytest.param(_doc({**GOOD, "mode": True}), "mode of a", id="mode-bool"),
        pytest.param(_doc({**GOOD, "mode": 70000}), "mode of a", id="mode-big"),
        pytest.param(_doc({**GOOD, "link": 1}), "link of a must be a string", id="link-number"),
        pytest.param(_doc({**GOOD, "link": ["b"]}), "link of a", id="link-list"),
        pytest.param(_doc({**GOOD, "link": "/etc"}), "outside", id="link-absolute"),
        pytest.param(_doc({**GOOD, "link": "../.."}), "outside", id="link-escape"),
        pytest.param(_doc({**GOOD, "path": "../a"}), "'..'", id="path-dotdot"),
        pytest.param(_doc({**GOOD, "path": "/a"}), "absolute", id="path-absolute"),
        pytest.param(_doc({**GOOD, "path": "bad\udcff"}), "UTF-8", id="path-surrogate"),
        pytest.param(_doc(GOOD, GOOD), "duplicate path", id="duplicate"),
        pytest.param(_doc(GOOD, {**GOOD, "path": "a/b"}), "both a file", id="clash"),
    ],
)
def test_manifest_from_json_refuses_bad_documents_with_invalid_input(
    raw: bytes, message: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        Manifest.from_json(raw)
    assert message in str(info.value)


def test_manifest_from_dict_refuses_a_non_mapping() -> None:
    with pytest.raises(InvalidInput):
        Manifest.from_dict([GOOD])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        FileEntry.from_dict("a")  # type: ignore[arg-type]


# -- properties ----------------------------------------------------------------------------

NAME_CHARS = st.sampled_from("abcxyzABZ019._- éжλ日本🎮")
DIR_NAME = st.text(NAME_CHARS, min_size=1, max_size=10).filter(lambda s: s not in (".", ".."))
# A "~" ends every file name and never appears in a directory name, so no file path can
# also be the directory of another file: generated manifests are always valid.
FILE_NAME = DIR_NAME.map(lambda s: s + "~f")
SAFE_PATH = st.builds(
    lambda dirs, name: "/".join([*dirs, name]),
    st.lists(DIR_NAME, max_size=4),
    FILE_NAME,
)
SHA = st.binary(max_size=8).map(sha)


@st.composite
def file_entries(draw: st.DrawFn, path: str) -> FileEntry:
    if draw(st.booleans()) and draw(st.booleans()):
        # A link to a sibling name: always inside the tree.
        target = draw(DIR_NAME)
        return FileEntry(path, 0, sha(target.encode()), mode=0o777, link=target)
    return FileEntry(
        path,
        draw(st.integers(min_value=0, max_value=2**63)),
        draw(SHA),
        mode=draw(st.integers(min_value=0, max_value=0o7777)),
    )


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    paths = draw(st.lists(SAFE_PATH, unique=True, max_size=12))
    return Manifest.of([draw(file_entries(p)) for p in paths])


@PROPERTY
@given(SAFE_PATH)
def test_property_generated_paths_are_safe(path: str) -> None:
    assert check_path(path) == path


@PROPERTY
@given(manifests())
def test_property_json_round_trip(m: Manifest) -> None:
    raw = m.canonical_bytes()
    back = Manifest.from_json(raw)
    assert back == m
    assert back.id == m.id
    assert back.canonical_bytes() == raw
    assert Manifest.from_dict(json.loads(raw)) == m
    assert [f.path for f in m] == sorted(f.path for f in m)


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | st.sampled_from(["a", "a/b", "../x", "/abs", sha(b"x"), FORMAT, "bad\udcff"])
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
ENTRY_KEYS = st.sampled_from(["path", "size", "sha256", "mode", "link", "extra"])
ENTRY_VALUES = st.one_of(
    JSON,
    st.sampled_from(["a", "a/b", "b", "..", "/etc"]),
    st.sampled_from([sha(b"x"), sha(b"y")]),
    st.integers(min_value=-2, max_value=0o10000),
)
MANIFEST_LIKE = st.fixed_dictionaries(
    {"files": st.lists(st.dictionaries(ENTRY_KEYS, ENTRY_VALUES) | JSON, max_size=4) | JSON},
    optional={"format": st.just(FORMAT) | JSON, "extra": JSON},
)


def _only_invalid_input(raw: bytes | str) -> None:
    try:
        m = Manifest.from_json(raw)
    except InvalidInput:
        return
    # Anything accepted is a valid manifest that survives its own round trip.
    assert Manifest.from_json(m.canonical_bytes()) == m


@PROPERTY
@given(MANIFEST_LIKE | JSON)
def test_property_from_json_only_ever_raises_invalid_input(doc: Any) -> None:
    _only_invalid_input(json.dumps(doc))


@settings(PROPERTY, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=64) | st.text(max_size=64))
def test_property_from_json_of_random_bytes_only_ever_raises_invalid_input(
    raw: bytes | str,
) -> None:
    _only_invalid_input(raw)
