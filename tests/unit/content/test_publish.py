"""Unit tests for ``changeover.content.publish``: building, storing and indexing patches."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
from pathlib import Path
from typing import Any

import pytest

from changeover.content import hdiff, patching
from changeover.content.manifest import FileEntry, Manifest
from changeover.content.patch_choice import Calibration, PublishBudget
from changeover.content.patch_index import (
    EMPTY_SHA256,
    PatchEntry,
    PatchIndex,
    PatchMethod,
    known_method,
    patch_path,
)
from changeover.content.plan import FROM_NOTHING, LocalFile, Patch, plan_sync
from changeover.content.publish import build_patches, load_index
from changeover.content.store import LocalStore
from changeover.errors import InvalidInput, NotFound


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def text(rng: random.Random, size: int) -> bytes:
    words = [rng.randbytes(rng.randint(3, 9)) for _ in range(200)]
    return b"".join(rng.choice(words) for _ in range(size // 6))[:size]


def publish_version(store: LocalStore, tmp: Path, files: dict[str, bytes]) -> Manifest:
    entries = []
    for path, data in files.items():
        src = tmp / "src"
        src.write_bytes(data)
        store.put_file(src, sha(data))
        entries.append(FileEntry(path, len(data), sha(data)))
    manifest = Manifest.of(entries)
    store.put_manifest(manifest)
    return manifest


@pytest.fixture
def versions(tmp_path: Path) -> tuple[LocalStore, list[Manifest], dict[str, bytes]]:
    """Three versions of a small game; the last one changes, renames and replaces files."""
    rng = random.Random(1)
    store = LocalStore(tmp_path / "store")
    engine, world, lib = text(rng, 60_000), text(rng, 80_000), text(rng, 40_000)
    v1 = {"bin/engine": engine, "world.pak": world, "lib/libfoo-3f2a9c.so": lib}
    v2 = {**v1, "bin/engine": engine[:30_000] + b"v2" + engine[30_000:]}
    v3 = {
        "bin/engine": engine[:30_000] + b"v3!" + engine[30_000:],
        "world.pak": world[:-100] + b"tail",
        "lib/libfoo-8b1d22.so": lib[:20_000] + b"patched" + lib[20_000:],
        "noise.bin": rng.randbytes(20_000),  # new and incompressible: the blob wins
    }
    manifests = [publish_version(store, tmp_path, v) for v in (v1, v2, v3)]
    return store, manifests, v3


def test_patches_rebuild_targets_and_beat_blobs(
    versions: tuple[LocalStore, list[Manifest], dict[str, bytes]], tmp_path: Path
) -> None:
    store, (v1, v2, v3), files = versions
    index = build_patches(store, v3, [v2, v1], workers=1)
    assert index.manifest_id == v3.id
    by_path = {f.path: f for f in v3}
    # engine: from v2 and from v1 (different contents); world and lib: one base each
    assert len(index.for_target(by_path["bin/engine"].sha256)) == 2
    assert len(index.for_target(by_path["world.pak"].sha256)) == 1
    [lib_patch] = index.for_target(by_path["lib/libfoo-8b1d22.so"].sha256)
    assert lib_patch.base_sha256 == v1.get("lib/libfoo-3f2a9c.so").sha256  # type: ignore[union-attr]
    assert index.for_target(by_path["noise.bin"].sha256) == ()
    for target, entries in index.patches.items():
        for e in entries:
            stored = store.content / e.path
            assert stored.stat().st_size == e.size < store.stored_size(target)
            assert sha(stored.read_bytes()) == e.sha256
            base = tmp_path / "base"
            base.write_bytes(b"".join(store.open_blob(e.base_sha256)))
            out = io.BytesIO()
            size = len(files[_path_of(v3, target)])
            patching.apply(e.method, base, stored, out, expected_size=size, expected_sha256=target)
            assert sha(out.getvalue()) == target
    assert load_index(store, v3.id) == index


def _path_of(manifest: Manifest, sha256: str) -> str:
    return next(f.path for f in manifest if f.sha256 == sha256)


def test_patch_not_smaller_than_blob_is_not_kept(tmp_path: Path) -> None:
    rng = random.Random(2)
    store = LocalStore(tmp_path / "store")
    old = publish_version(store, tmp_path, {"a.bin": rng.randbytes(10_000)})
    new = publish_version(store, tmp_path, {"a.bin": rng.randbytes(10_000)})
    index = build_patches(store, new, [old], workers=1)
    assert len(index) == 0
    assert not list((store.content / "patches").glob("??/*.zpatch"))
    assert (store.content / "patches" / "index" / f"{new.id}.json").exists()


def test_rerun_builds_nothing_again(
    versions: tuple[LocalStore, list[Manifest], dict[str, bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, (v1, v2, v3), _ = versions
    first = build_patches(store, v3, [v2, v1], workers=1)

    def fail(*args: Any, **kwargs: Any) -> int:
        raise AssertionError("a patch was rebuilt")

    monkeypatch.setattr(patching, "make", fail)
    assert build_patches(store, v3, [v2, v1], workers=1) == first


def test_process_pool_gives_the_same_index(
    versions: tuple[LocalStore, list[Manifest], dict[str, bytes]], tmp_path: Path
) -> None:
    store, (v1, v2, v3), _ = versions
    pooled = build_patches(store, v3, [v2, v1], workers=2)
    other = LocalStore(tmp_path / "other")
    for m in (v1, v2, v3):
        for f in m:
            if not other.has(f.sha256):
                (tmp_path / "blob").write_bytes(b"".join(store.open_blob(f.sha256)))
                other.put_file(tmp_path / "blob", f.sha256)
    assert build_patches(other, v3, [v2, v1], workers=1) == pooled
    assert len(pooled) == 4


def relinked_library(rng: random.Random) -> tuple[bytes, bytes]:
    ops = [rng.randbytes(rng.randint(1, 3)) for _ in range(50)]
    code = b"".join(
        rng.choice(ops) + rng.randrange(1 << 16).to_bytes(4, "little") for _ in range(15_000)
    )
    old = b"\x7fELF\x02\x01\x01\x00" + code
    new = bytearray(old[:4000] + rng.randbytes(100) + old[4000:])
    for pos in range(4100, len(new) - 4, 71):
        value = int.from_bytes(new[pos : pos + 4], "little") + 32
        new[pos : pos + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
    return old, bytes(new)


def test_methods_follow_what_each_file_is_and_the_budget(tmp_path: Path) -> None:
    rng = random.Random(4)
    lib_old, lib_new = relinked_library(rng)
    png = b"\x89PNG\r\n\x1a\n" + rng.randbytes(30_000)
    store = LocalStore(tmp_path / "store")
    old = publish_version(store, tmp_path, {"libgame.so": lib_old, "splash.png": png})
    new_png = png[:20_000] + rng.randbytes(500) + png[20_000:]
    new = publish_version(store, tmp_path, {"libgame.so": lib_new, "splash.png": new_png})
    index = build_patches(store, new, [old], workers=1)
    [lib] = index.for_target(sha(lib_new))
    [image] = index.for_target(sha(new_png))
    # A small image gets zstd -3 and HDiffPatch, the smaller kept: here HDiffPatch's.
    assert (lib.method, image.method) == ("hdiffpatch", "hdiffpatch")
    # Only zstd (clients older than methods about): the library's patch is zstd -19's,
    # larger than HDiffPatch's; a fixed level is zstd's too.
    for kw in ({"budget": PublishBudget(methods=frozenset({PatchMethod.ZSTD}))}, {"level": 19}):
        other = LocalStore(tmp_path / f"other-{len(kw)}-{next(iter(kw))}")
        a = publish_version(other, tmp_path, {"libgame.so": lib_old})
        b = publish_version(other, tmp_path, {"libgame.so": lib_new})
        [zstd_only] = build_patches(other, b, [a], workers=1, **kw).for_target(sha(lib_new))  # type: ignore[arg-type]
        assert zstd_only.method == "zstd" and zstd_only.size > lib.size


def test_a_method_that_fails_on_a_pair_leaves_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(5)
    lib_old, lib_new = relinked_library(rng)
    store = LocalStore(tmp_path / "store")
    a = publish_version(store, tmp_path, {"libgame.so": lib_old})
    b = publish_version(store, tmp_path, {"libgame.so": lib_new})

    def refuse(*args: Any, **kwargs: Any) -> int:
        raise InvalidInput("hdiffpatch could not diff it")

    monkeypatch.setattr(hdiff, "make_patch", refuse)
    [entry] = build_patches(store, b, [a], workers=1).for_target(sha(lib_new))
    assert entry.method == "zstd"


def test_history_limits_the_versions_used(
    versions: tuple[LocalStore, list[Manifest], dict[str, bytes]],
) -> None:
    store, (v1, v2, v3), _ = versions
    index = build_patches(store, v3, [v2, v1], workers=1, history=1)
    bases = {e.base_sha256 for entries in index.patches.values() for e in entries}
    assert bases <= v2.blob_hashes()


def test_missing_target_blob_is_an_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    manifest = Manifest.of([FileEntry("a", 3, sha(b"abc"))])
    with pytest.raises(NotFound):
        build_patches(store, manifest, [], workers=1)


# -- the index ---------------------------------------------------------------------------


def entry(base: str, target: str, size: int = 10) -> PatchEntry:
    return PatchEntry(base, target, patch_path(base, target), size, sha(base.encode()))


A, B, C, D = (sha(x) for x in (b"a", b"b", b"c", b"d"))


def test_index_json_round_trip() -> None:
    index = PatchIndex(D, {C: (entry(A, C, 5), entry(B, C, 7)), B: (entry(A, B),)})
    assert PatchIndex.from_json(index.to_json()) == index
    assert json.loads(index.to_json())["patches"][C][0] == {
        "base": A,
        "path": f"patches/{A[:2]}/{A}-{C}.zpatch",
        "size": 5,
        "sha256": sha(A.encode()),
    }


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(format="other/1"),
        lambda d: d.update(manifest="nope"),
        lambda d: d.update(patches=[]),
        lambda d: d["patches"].update({"xyz": []}),
        lambda d: d["patches"][C][0].update(path="../../etc/passwd"),
        lambda d: d["patches"][C][0].update(size=0),
        lambda d: d["patches"][C][0].update(size=True),
        lambda d: d["patches"][C][0].update(extra=1),
        lambda d: d["patches"][C].append(dict(d["patches"][C][0])),
        lambda d: d["patches"][C][0].update(base=C, path=patch_path(C, C)),
    ],
)
def test_index_validation(mutate: Any) -> None:
    d = PatchIndex(D, {C: (entry(A, C),)}).to_dict()
    mutate(d)
    with pytest.raises(InvalidInput):
        PatchIndex.from_dict(d)


def test_index_names_each_patch_method_where_older_clients_do_not_look() -> None:
    hd = dataclasses.replace(entry(B, C, 4), method="hdiffpatch")
    future = dataclasses.replace(entry(A, C, 3), method="xdelta9")
    index = PatchIndex(D, {C: (future, hd, entry(D, C, 5))})
    raw = json.loads(index.to_json())
    # What a client older than methods reads, and requires of each entry: the zstd ones.
    assert [set(e) for e in raw["patches"][C]] == [{"base", "path", "size", "sha256"}]
    assert [e["method"] for e in raw["method_patches"][C]] == ["xdelta9", "hdiffpatch"]
    again = PatchIndex.from_dict(raw)
    assert again == index
    assert [e.method for e in again.for_target(C)] == ["xdelta9", "hdiffpatch", "zstd"]
    assert known_method("hdiffpatch") and known_method("zstd") and not known_method("xdelta9")
    # An index of zstd patches only is what it was before methods.
    assert "method_patches" not in PatchIndex(D, {C: (entry(D, C, 5),)}).to_dict()
    for bad in ("", "UPPER", "a/b", "x" * 33, 7, None):
        raw["method_patches"][C][0]["method"] = bad
        with pytest.raises(InvalidInput, match="method"):
            PatchIndex.from_dict(raw)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["method_patches"][C][0].pop("method"),  # zstd among the others
        lambda d: d["patches"][C][0].update(method="hdiffpatch"),  # another among zstd
        lambda d: d["method_patches"][C].append(dict(d["patches"][C][0], method="hdiffpatch")),
        lambda d: d.update(method_patches=[]),
    ],
)
def test_index_keeps_methods_in_their_places(mutate: Any) -> None:
    hd = dataclasses.replace(entry(B, C, 4), method="hdiffpatch")
    d = PatchIndex(D, {C: (hd, entry(A, C, 5))}).to_dict()
    mutate(d)
    with pytest.raises(InvalidInput):
        PatchIndex.from_dict(d)


def test_index_rejects_bad_json_and_missing_index(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        PatchIndex.from_json(b"{not json")
    with pytest.raises(NotFound):
        load_index(LocalStore(tmp_path), D)


def test_merge_keeps_one_entry_per_base_smallest_first() -> None:
    merged = PatchIndex.merge(
        D,
        [
            PatchIndex(C, {C: (entry(A, C, 9),)}),
            PatchIndex(D, {C: (entry(B, C, 3), entry(A, C, 9))}),
        ],
    )
    assert [e.base_sha256 for e in merged.for_target(C)] == [B, A]


def test_a_new_file_comes_as_a_fresh_patch_when_a_stronger_level_beats_its_blob(
    tmp_path: Path,
) -> None:
    """A file no earlier version had: its blob was compressed fast on upload; a fresh
    patch (from the empty content) at -19 is smaller, and every client can apply it."""
    rng = random.Random(2)
    store = LocalStore(tmp_path / "store")
    engine = text(rng, 50_000)
    new_map, tiny, noise = text(rng, 200_000), text(rng, 1000), rng.randbytes(50_000)
    v1 = publish_version(store, tmp_path, {"bin/engine": engine})
    v2 = publish_version(
        store,
        tmp_path,
        {
            "bin/engine": engine,
            "bin/engine-copy": engine,
            "maps/new.map": new_map,
            "tiny.txt": tiny,
            "noise.bin": noise,
        },
    )
    index = build_patches(store, v2, [v1], workers=1)
    [fresh] = index.for_target(sha(new_map))
    assert fresh.base_sha256 == EMPTY_SHA256 and fresh.method == PatchMethod.ZSTD
    assert fresh.size < store.stored_size(sha(new_map))
    empty = tmp_path / "empty"
    empty.touch()
    out = io.BytesIO()
    stored = store.content / fresh.path
    patching.apply(
        fresh.method, empty, stored, out, expected_size=len(new_map), expected_sha256=sha(new_map)
    )
    assert out.getvalue() == new_map
    # Too small to pay, or incompressible: no fresh patch, the blob serves.
    assert index.for_target(sha(tiny)) == () and index.for_target(sha(noise)) == ()
    # Unchanged, or moved (a content v1 had, at a new path): held, nothing to patch.
    assert index.for_target(sha(engine)) == ()
    assert len(index) == 1
    # A host holding v1 plans it: from nothing, for fewer bytes than the blob.
    plan = plan_sync(
        {f.path: LocalFile(f.size, f.sha256) for f in v1},
        v2,
        index,
        {h: store.stored_size(h) for h in v2.blob_hashes()},
    )
    [action] = [a for a in plan.actions if a.path == "maps/new.map"]
    assert action == Patch("maps/new.map", FROM_NOTHING, (fresh,))


def test_fresh_patches_give_way_first_when_the_budget_is_short(tmp_path: Path) -> None:
    rng = random.Random(3)
    store = LocalStore(tmp_path / "store")
    v1 = publish_version(store, tmp_path, {"a": text(rng, 10_000)})
    new_map = text(rng, 200_000)
    v2 = publish_version(store, tmp_path, {"a": text(rng, 10_000), "new.map": new_map})
    none = build_patches(store, v2, [v1], workers=1, budget=PublishBudget(cpu_s=0.0))
    assert none.for_target(sha(new_map)) == ()


def test_a_publish_teaches_the_calibration_what_its_patches_cost(
    versions: tuple[LocalStore, list[Manifest], dict[str, bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, (v1, v2, v3), _ = versions
    monkeypatch.setattr(Calibration, "MIN_OBSERVED_S", 0.0)  # a small game: a short publish
    seen: list[tuple[dict[str, float], dict[str, float]]] = []
    original = Calibration.observe

    def observe(self: Calibration, estimated_s: Any, actual_s: Any) -> None:
        seen.append((dict(estimated_s), dict(actual_s)))
        original(self, estimated_s, actual_s)

    monkeypatch.setattr(Calibration, "observe", observe)
    calibration = Calibration()
    first = build_patches(store, v3, [v2, v1], workers=1, calibration=calibration)
    [(estimated, actual)] = seen
    # The estimate of what was built and its CPU, each class apart: these text files get
    # zstd -19 and HDiffPatch both (small non-executables, ``patch_choice.ladder``).
    assert all(estimated[c] > 0 and actual[c] > 0 for c in ("zstd", "hdiff"))
    assert calibration.factors != {"zstd": 1.0, "hdiff": 1.0}
    learned = calibration.factors
    # Nothing is built again: nothing to learn from (no CPU measured, none estimated).
    assert build_patches(store, v3, [v2, v1], workers=1, calibration=calibration) == first
    assert seen[1] == ({"zstd": 0.0, "hdiff": 0.0},) * 2 and calibration.factors == learned
