"""Staging versions side by side from a content tree, with every byte verified."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from changeover.agent import staging as staging_module
from changeover.agent.staging import Staging, retained
from changeover.content.manifest import FileEntry, Manifest
from changeover.content.patch_choice import PublishBudget
from changeover.content.patch_index import EMPTY_SHA256, PatchIndex, PatchMethod
from changeover.content.publish import build_patches
from changeover.content.store import LocalStore
from changeover.errors import IntegrityError, NotFound


class StoreFetcher:
    """The content tree of a LocalStore, read the way an HTTP mirror would serve it."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.blobs: list[str] = []
        self.patches: list[str] = []

    def manifest(self, manifest_id: str) -> bytes:
        path = self.store.content / "manifests" / f"{manifest_id}.json"
        if not path.exists():
            raise NotFound(f"no manifest {manifest_id}")
        return path.read_bytes()

    def blob(self, sha256: str, max_bytes: int) -> Iterator[bytes]:
        self.blobs.append(sha256)
        data = self.store.blob_path(sha256).read_bytes()
        yield from (data[i : i + 7] for i in range(0, len(data), 7))

    def patch_index(self, manifest_id: str) -> bytes | None:
        path = self.store.content / "patches" / "index" / f"{manifest_id}.json"
        return path.read_bytes() if path.exists() else None

    def patch(self, path: str, max_bytes: int) -> Iterator[bytes]:
        self.patches.append(path)
        yield (self.store.content / path).read_bytes()


def publish(store: LocalStore, tmp: Path, files: dict[str, tuple[bytes, int]]) -> str:
    entries = []
    for path, (data, mode) in files.items():
        src = tmp / hashlib.sha256(data).hexdigest()
        src.write_bytes(data)
        store.put_file(src, hashlib.sha256(data).hexdigest())
        entries.append(FileEntry(path, len(data), hashlib.sha256(data).hexdigest(), mode))
    return store.put_manifest(Manifest.of(entries))


@pytest.fixture
def env(tmp_path: Path) -> tuple[LocalStore, StoreFetcher, Staging, Path]:
    store = LocalStore(tmp_path / "store")
    (tmp_path / "src").mkdir()
    return store, StoreFetcher(store), Staging(tmp_path / "work"), tmp_path / "src"


def test_two_versions_share_unchanged_files_by_hard_link(
    env: tuple[LocalStore, StoreFetcher, Staging, Path],
) -> None:
    store, fetcher, staging, src = env
    v1 = publish(
        store,
        src,
        {"bin/game": (b"v1" * 100, 0o755), "data/map": (b"m" * 5000, 0o644), "e": (b"", 0o600)},
    )
    v2 = publish(store, src, {"bin/game": (b"v2" * 100, 0o755), "data/map": (b"m" * 5000, 0o644)})
    d1 = staging.stage(fetcher, v1)
    assert (d1 / "bin/game").read_bytes() == b"v1" * 100
    assert (d1 / "bin/game").stat().st_mode & 0o777 == 0o755
    assert (d1 / "e").read_bytes() == b"" and (d1 / "e").stat().st_mode & 0o777 == 0o600
    fetched = len(fetcher.blobs)
    d2 = staging.stage(fetcher, v2)
    assert len(fetcher.blobs) == fetched + 1  # only the changed file was fetched
    assert os.path.samefile(d1 / "data/map", d2 / "data/map")
    assert not os.path.samefile(d1 / "bin/game", d2 / "bin/game")
    assert staging.stage(fetcher, v1) == d1  # staging again is a no-op
    assert staging.staged() == sorted([v1, v2])

    staging.prune([v2])
    assert staging.staged() == [v2]
    assert (d2 / "data/map").read_bytes() == b"m" * 5000


def test_links_are_kept(env: tuple[LocalStore, StoreFetcher, Staging, Path]) -> None:
    store, fetcher, staging, src = env
    link = FileEntry("bin/current", 0, hashlib.sha256(b"game").hexdigest(), 0o777, link="game")
    (src / "g").write_bytes(b"x")
    store.put_file(src / "g", hashlib.sha256(b"x").hexdigest())
    game = FileEntry("bin/game", 1, hashlib.sha256(b"x").hexdigest(), 0o755)
    mid = store.put_manifest(Manifest.of([link, game]))
    d = staging.stage(fetcher, mid)
    assert os.readlink(d / "bin/current") == "game"
    assert (d / "bin/current").read_bytes() == b"x"


def test_a_tampered_blob_stages_nothing(
    env: tuple[LocalStore, StoreFetcher, Staging, Path],
) -> None:
    store, fetcher, staging, src = env
    mid = publish(store, src, {"a": (b"good content", 0o644), "b": (b"other", 0o644)})
    sha = hashlib.sha256(b"other").hexdigest()
    store.blob_path(sha).write_bytes(zstandard.ZstdCompressor().compress(b"evil!"))
    with pytest.raises(IntegrityError, match="expected sha256"):
        staging.stage(fetcher, mid)
    assert staging.staged() == []
    assert not list(staging.versions.iterdir())  # no half-built version left
    assert not [p for p in staging.objects.iterdir() if p.name.startswith(sha)]


def test_an_oversized_or_garbled_blob_is_refused(
    env: tuple[LocalStore, StoreFetcher, Staging, Path],
) -> None:
    store, fetcher, staging, src = env
    mid = publish(store, src, {"a": (b"1234", 0o644)})
    sha = hashlib.sha256(b"1234").hexdigest()
    store.blob_path(sha).write_bytes(zstandard.ZstdCompressor().compress(b"x" * 100000))
    with pytest.raises(IntegrityError, match="more than its 4 bytes"):
        staging.stage(fetcher, mid)
    store.blob_path(sha).write_bytes(b"not zstd at all")
    with pytest.raises(IntegrityError, match="not a zstd frame"):
        staging.stage(fetcher, mid)


def test_a_manifest_that_does_not_match_its_id(
    env: tuple[LocalStore, StoreFetcher, Staging, Path],
) -> None:
    store, fetcher, staging, src = env
    mid = publish(store, src, {"a": (b"1", 0o644)})
    path = store.content / "manifests" / f"{mid}.json"
    path.write_bytes(path.read_bytes().replace(b'"a"', b'"b"'))
    with pytest.raises(IntegrityError, match=f"manifest {mid}"):
        staging.stage(fetcher, mid)
    with pytest.raises(NotFound):
        staging.stage(fetcher, "0" * 64)


def _game_versions(store: LocalStore, src: Path) -> tuple[str, str, str]:
    """v1 and v2 of a 400 KB game binary that changed in a few places; the v2 hash."""
    rng = random.Random(5)
    old = bytes(rng.randrange(256) for _ in range(400_000))
    new = bytearray(old)
    for at in (1000, 150_000, 399_000):
        new[at : at + 40] = b"v2" * 20
    v1 = publish(store, src, {"bin/game": (old, 0o755), "map": (b"m" * 900, 0o644)})
    v2 = publish(store, src, {"bin/game": (bytes(new), 0o755), "map": (b"m" * 900, 0o644)})
    build_patches(store, store.get_manifest(v2), [store.get_manifest(v1)], workers=1)
    return v1, v2, hashlib.sha256(new).hexdigest()


def test_a_host_holding_the_old_build_stages_the_new_one_from_a_patch(
    env: tuple[LocalStore, StoreFetcher, Staging, Path],
) -> None:
    store, fetcher, staging, src = env
    v1, v2, new_sha = _game_versions(store, src)
    staging.stage(fetcher, v1)
    before = staging.downloaded
    d2 = staging.stage(fetcher, v2)
    assert hashlib.sha256((d2 / "bin/game").read_bytes()).hexdigest() == new_sha
    assert new_sha not in fetcher.blobs  # the 400 KB file came as a patch
    assert len(fetcher.patches) == 1
    assert staging.downloaded - before < 20_000


def test_a_big_asset_is_staged_from_a_zstd_runs_patch(
    env: tuple[LocalStore, StoreFetcher, Staging, Path],
) -> None:
    """A file over 8 MiB with a region rewritten: its patch copies the unchanged
    stretches (method ``zstd-runs``) and the agent applies it."""
    store, fetcher, staging, src = env
    rng = random.Random(8)
    old = rng.randbytes(9 << 20)
    new = old[: 3 << 20] + rng.randbytes(40_000) + old[(3 << 20) + 40_000 :]
    v1 = publish(store, src, {"data/movie.bulk": (old, 0o644)})
    v2 = publish(store, src, {"data/movie.bulk": (new, 0o644)})
    budget = PublishBudget(methods=frozenset({PatchMethod.ZSTD, PatchMethod.ZSTD_RUNS}))
    index = build_patches(
        store, store.get_manifest(v2), [store.get_manifest(v1)], workers=1, budget=budget
    )
    [entry] = index.for_target(hashlib.sha256(new).hexdigest())
    assert entry.method == PatchMethod.ZSTD_RUNS and entry.size < 41_000
    staging.stage(fetcher, v1)
    d2 = staging.stage(fetcher, v2)
    assert (d2 / "data/movie.bulk").read_bytes() == new
    assert len(fetcher.patches) == 1 and hashlib.sha256(new).hexdigest() not in fetcher.blobs


def test_a_bad_patch_falls_back_to_the_blob(
    env: tuple[LocalStore, StoreFetcher, Staging, Path],
) -> None:
    store, fetcher, staging, src = env
    v1, v2, new_sha = _game_versions(store, src)
    for patch in (store.content / "patches").rglob("*.zpatch"):
        patch.write_bytes(b"garbage" + patch.read_bytes()[7:])  # same size, wrong hash
    staging.stage(fetcher, v1)
    d2 = staging.stage(fetcher, v2)
    assert hashlib.sha256((d2 / "bin/game").read_bytes()).hexdigest() == new_sha
    assert new_sha in fetcher.blobs


def test_an_index_of_another_version_or_garbage_is_ignored(
    env: tuple[LocalStore, StoreFetcher, Staging, Path],
) -> None:
    store, fetcher, staging, src = env
    v1, v2, new_sha = _game_versions(store, src)
    index = store.content / "patches" / "index" / f"{v2}.json"
    index.write_bytes(b"{not json")
    staging.stage(fetcher, v1)
    d2 = staging.stage(fetcher, v2)
    assert (d2 / "map").read_bytes() == b"m" * 900
    assert new_sha in fetcher.blobs and not fetcher.patches


HDIFF_METHODS = [PatchMethod.HDIFFPATCH, PatchMethod.HDIFFPATCH_LZMA2]


def _elf_versions(
    store: LocalStore, src: Path, method: PatchMethod = PatchMethod.HDIFFPATCH
) -> tuple[str, str, str]:
    """v1 and v2 of an ELF-like library whose code moved, as a relink moves it; the v2
    hash. Its patch is HDiffPatch's, coded as ``method`` says (the only one allowed)."""
    rng = random.Random(7)
    ops = [rng.randbytes(rng.randint(1, 3)) for _ in range(60)]
    code = b"".join(
        rng.choice(ops) + rng.randrange(1 << 16).to_bytes(4, "little") for _ in range(40_000)
    )
    old = b"\x7fELF\x02\x01\x01" + code
    new = bytearray(old[:5000] + rng.randbytes(300) + old[5000:])
    for pos in range(5300, len(new) - 4, 89):
        value = int.from_bytes(new[pos : pos + 4], "little") + 64
        new[pos : pos + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
    v1 = publish(store, src, {"lib/libgame.so": (old, 0o755)})
    v2 = publish(store, src, {"lib/libgame.so": (bytes(new), 0o755)})
    budget = PublishBudget(methods=frozenset({PatchMethod.ZSTD, method}))
    index = build_patches(
        store, store.get_manifest(v2), [store.get_manifest(v1)], workers=1, budget=budget
    )
    [entry] = index.for_target(hashlib.sha256(new).hexdigest())
    assert entry.method == method
    return v1, v2, hashlib.sha256(new).hexdigest()


def _rewrite_patch(
    store: LocalStore, v2: str, method: str, mangle: Callable[[bytes], bytes]
) -> None:
    """Replace v2's one patch by ``mangle`` of it, listed under ``method`` with the right
    size and hash: a hostile index and patch that agree with each other."""
    path = store.content / "patches" / "index" / f"{v2}.json"
    index = PatchIndex.from_json(path.read_bytes())
    [(target, [entry])] = index.patches.items()
    patch = store.content / entry.path
    patch.write_bytes(mangle(patch.read_bytes()))
    data = patch.read_bytes()
    entry = dataclasses.replace(
        entry, method=method, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    path.write_bytes(PatchIndex(v2, {target: (entry,)}).to_json())


@pytest.mark.parametrize("method", HDIFF_METHODS)
def test_an_elf_library_is_staged_from_an_hdiffpatch_patch(
    env: tuple[LocalStore, StoreFetcher, Staging, Path], method: PatchMethod
) -> None:
    store, fetcher, staging, src = env
    v1, v2, new_sha = _elf_versions(store, src, method)
    staging.stage(fetcher, v1)
    d2 = staging.stage(fetcher, v2)
    assert hashlib.sha256((d2 / "lib/libgame.so").read_bytes()).hexdigest() == new_sha
    assert new_sha not in fetcher.blobs and len(fetcher.patches) == 1


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p[:60] + bytes(b ^ 0xA5 for b in p[60:90]) + p[90:],  # a corrupt body
        lambda p: p[:-10],  # truncated
        lambda p: p[:40] + b"HDIFF13&lzma\x00" + p[40 + p[40:].index(b"\x00") + 1 :],  # lzma 1
        lambda p: b"CHOVPTCH" + p[8:],  # the magic of the other method
        lambda p: (b"CHOVHDLZ" if p[:8] == b"CHOVHDIF" else b"CHOVHDIF") + p[8:],  # other coding
    ],
)
@pytest.mark.parametrize("method", HDIFF_METHODS)
def test_a_hostile_hdiffpatch_patch_writes_nothing_and_the_blob_is_fetched(
    env: tuple[LocalStore, StoreFetcher, Staging, Path],
    monkeypatch: pytest.MonkeyPatch,
    mangle: Callable[[bytes], bytes],
    method: PatchMethod,
) -> None:
    store, fetcher, staging, src = env
    v1, v2, new_sha = _elf_versions(store, src, method)
    _rewrite_patch(store, v2, method, mangle)
    staging.stage(fetcher, v1)
    sinks: list[staging_module._Checked] = []
    real_init = staging_module._Checked.__init__

    def spy(self: staging_module._Checked, *args: Any) -> None:
        real_init(self, *args)
        sinks.append(self)

    monkeypatch.setattr(staging_module._Checked, "__init__", spy)
    d2 = staging.stage(fetcher, v2)
    assert hashlib.sha256((d2 / "lib/libgame.so").read_bytes()).hexdigest() == new_sha
    assert len(fetcher.patches) == 1 and new_sha in fetcher.blobs
    patch_try, blob = sinks
    assert patch_try.written == 0  # the patch was refused before a byte was written
    assert blob.written == len((d2 / "lib/libgame.so").read_bytes())
    assert not [p for p in staging.objects.iterdir() if p.name.startswith(".tmp")]


def test_a_patch_of_an_unknown_method_is_refused_before_it_is_fetched(
    env: tuple[LocalStore, StoreFetcher, Staging, Path],
) -> None:
    store, fetcher, staging, src = env
    v1, v2, new_sha = _elf_versions(store, src)
    _rewrite_patch(store, v2, "xdelta9", lambda p: p)
    staging.stage(fetcher, v1)
    d2 = staging.stage(fetcher, v2)
    assert hashlib.sha256((d2 / "lib/libgame.so").read_bytes()).hexdigest() == new_sha
    assert fetcher.patches == [] and new_sha in fetcher.blobs


def test_a_version_nothing_wants_stays_for_the_keep_time() -> None:
    keep, since = retained(["old", "new"], ["new"], {}, 100.0, 3600)
    assert keep == {"old", "new"} and since == {"old": 100.0}
    keep, since = retained(["old", "new"], ["new"], since, 3000.0, 3600)
    assert keep == {"old", "new"} and since == {"old": 100.0}  # the clock runs from 100
    keep, since = retained(["old", "new"], ["new"], since, 3700.0, 3600)
    assert keep == {"new"} and since == {}
    # Wanted again (a revert): its clock starts afresh the next time it is let go.
    keep, since = retained(["old", "new"], ["old", "new"], {"old": 100.0}, 3000.0, 3600)
    assert keep == {"old", "new"} and since == {}
    assert retained(["old", "new"], ["new"], {}, 100.0, 0)[0] == {"new"}


def _fresh_versions(store: LocalStore, src: Path) -> tuple[str, str, bytes]:
    """v2 adds a compressible file no earlier version had: its fresh patch (from the empty
    content) is smaller than its blob."""
    rng = random.Random(11)
    words = [rng.randbytes(rng.randint(3, 9)) for _ in range(200)]
    new_map = b"".join(rng.choice(words) for _ in range(40_000))
    v1 = publish(store, src, {"bin/game": (b"g" * 5000, 0o755)})
    v2 = publish(store, src, {"bin/game": (b"g" * 5000, 0o755), "maps/new.map": (new_map, 0o644)})
    index = build_patches(store, store.get_manifest(v2), [store.get_manifest(v1)], workers=1)
    [entry] = index.for_target(hashlib.sha256(new_map).hexdigest())
    assert entry.base_sha256 == EMPTY_SHA256
    return v1, v2, new_map


def test_a_new_file_is_staged_from_its_fresh_patch(
    env: tuple[LocalStore, StoreFetcher, Staging, Path],
) -> None:
    store, fetcher, staging, src = env
    v1, v2, new_map = _fresh_versions(store, src)
    staging.stage(fetcher, v1)
    before = staging.downloaded
    d2 = staging.stage(fetcher, v2)
    new_sha = hashlib.sha256(new_map).hexdigest()
    assert (d2 / "maps/new.map").read_bytes() == new_map
    assert new_sha not in fetcher.blobs and len(fetcher.patches) == 1
    assert staging.downloaded - before < store.stored_size(new_sha)
    # The empty base is no version's file, and pruning keeps it for the next one.
    empty = staging.objects / f"{EMPTY_SHA256}.empty"
    assert empty.exists() and empty.stat().st_size == 0
    os.utime(empty, (0, 0))  # old enough to be pruned, were it any other object
    staging.prune([v2])
    assert empty.exists()


def test_a_bad_fresh_patch_falls_back_to_the_blob(
    env: tuple[LocalStore, StoreFetcher, Staging, Path],
) -> None:
    store, fetcher, staging, src = env
    v1, v2, new_map = _fresh_versions(store, src)
    for patch in (store.content / "patches").rglob("*.zpatch"):
        patch.write_bytes(patch.read_bytes()[:40] + b"garbage" + patch.read_bytes()[47:])
    staging.stage(fetcher, v1)
    d2 = staging.stage(fetcher, v2)
    assert (d2 / "maps/new.map").read_bytes() == new_map
    assert hashlib.sha256(new_map).hexdigest() in fetcher.blobs
