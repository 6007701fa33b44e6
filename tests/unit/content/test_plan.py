"""Unit tests for ``changeover.content.plan``: the cheapest way from disk to a version."""

from __future__ import annotations

import dataclasses
import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from changeover.content.manifest import FileEntry, Manifest
from changeover.content.patch_index import EMPTY_SHA256, PatchEntry, PatchIndex, patch_path
from changeover.content.plan import (
    FROM_NOTHING,
    Copy,
    Fetch,
    Keep,
    Link,
    LocalFile,
    Patch,
    Remove,
    plan_sync,
)


def h(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def p(base: str, target: str, size: int) -> PatchEntry:
    return PatchEntry(h(base), h(target), patch_path(h(base), h(target)), size, h(base + target))


def index(*entries: PatchEntry) -> PatchIndex:
    by: dict[str, list[PatchEntry]] = {}
    for e in entries:
        by.setdefault(e.target_sha256, []).append(e)
    return PatchIndex.merge(h("m"), [PatchIndex(h("m"), {k: tuple(v) for k, v in by.items()})])


def target(**files: str) -> Manifest:
    return Manifest.of(FileEntry(path, 1000, h(tag)) for path, tag in files.items())


def local(**files: str) -> dict[str, LocalFile]:
    return {path: LocalFile(1000, h(tag)) for path, tag in files.items()}


BLOBS = {h(t): 500 for t in ("a", "b", "c", "d", "x", "y")}


def test_keep_copy_fetch_remove() -> None:
    plan = plan_sync(
        local(**{"keep": "a", "old_name": "b", "stale": "x"}),
        target(keep="a", new_name="b", fresh="c"),
        index(),
        BLOBS,
    )
    assert plan.actions == (
        Fetch("fresh", h("c"), 500),
        Keep("keep"),
        Copy("new_name", "old_name"),
        Remove("old_name"),
        Remove("stale"),
    )
    assert plan.download_bytes == 500


def test_patch_when_cheaper_than_blob_else_fetch() -> None:
    cheap = plan_sync(local(f="a"), target(f="b"), index(p("a", "b", 100)), BLOBS)
    assert cheap.actions == (Patch("f", "f", (p("a", "b", 100),)),)
    assert cheap.download_bytes == 100
    dear = plan_sync(local(f="a"), target(f="b"), index(p("a", "b", 500)), BLOBS)
    assert dear.actions == (Fetch("f", h("b"), 500),)


def test_patches_of_a_method_this_client_does_not_know_are_never_planned() -> None:
    local = {"a": LocalFile(1000, h("a1")), "b": LocalFile(1000, h("b1"))}
    newer = dataclasses.replace(p("a1", "a2", 10), method="xdelta9")
    plan = plan_sync(local, target(a="a2", b="b1"), index(newer), {h("a2"): 500})
    assert plan.actions == (Fetch("a", h("a2"), 500), Keep("b"))
    hd = dataclasses.replace(p("b1", "a2", 20), method="hdiffpatch")
    plan = plan_sync(local, target(a="a2", b="b1"), index(newer, hd), {h("a2"): 500})
    assert plan.actions == (Patch("a", "b", (hd,)), Keep("b"))


def test_a_fresh_patch_starts_from_nothing_when_cheaper_than_the_blob() -> None:
    """Every client holds the empty content: a new file's fresh patch needs no local file."""
    fresh = PatchEntry(EMPTY_SHA256, h("c"), patch_path(EMPTY_SHA256, h("c")), 300, h("p"))
    plan = plan_sync(local(f="a"), target(f="a", new="c"), index(fresh), BLOBS)
    assert plan.actions == (Keep("f"), Patch("new", FROM_NOTHING, (fresh,)))
    assert plan.download_bytes == 300
    dear = dataclasses.replace(fresh, size=500)
    assert plan_sync({}, target(new="c"), index(dear), BLOBS).actions == (
        Fetch("new", h("c"), 500),
    )
    # An empty file in the target is fetched (or copied from a local empty file), never
    # "copied" from nothing.
    empty = Manifest.of([FileEntry("e", 0, EMPTY_SHA256)])
    assert plan_sync({}, empty, index(), {}).actions == (Fetch("e", EMPTY_SHA256, 0),)
    held = {"x": LocalFile(0, EMPTY_SHA256)}
    assert plan_sync(held, empty, index(), {}).actions == (Copy("e", "x"), Remove("x"))


def test_cheapest_of_several_bases_from_any_local_path() -> None:
    patches = index(p("a", "c", 300), p("b", "c", 120), p("x", "c", 50))
    plan = plan_sync(local(f="a", g="b"), target(f="c", g="b"), patches, BLOBS)
    assert plan.actions == (Patch("f", "g", (p("b", "c", 120),)), Keep("g"))


def test_base_at_the_same_path_is_preferred_among_equal_contents() -> None:
    plan = plan_sync(local(a="a", z="a"), target(z="b"), index(p("a", "b", 10)), BLOBS)
    assert plan.actions[0] == Patch("z", "z", (p("a", "b", 10),))
    plan = plan_sync(local(m="a", n="a"), target(z="b"), index(p("a", "b", 10)), BLOBS)
    assert plan.actions[0] == Patch("z", "m", (p("a", "b", 10),))


def test_multi_version_chain_only_when_cheaper() -> None:
    # Local file is two versions behind: a → b → c, or a → c directly.
    chain = index(p("a", "b", 40), p("b", "c", 40), p("a", "c", 200))
    plan = plan_sync(local(f="a"), target(f="c"), chain, BLOBS)
    assert plan.actions == (Patch("f", "f", (p("a", "b", 40), p("b", "c", 40))),)
    assert plan.download_bytes == 80
    direct = index(p("a", "b", 40), p("b", "c", 40), p("a", "c", 70))
    plan = plan_sync(local(f="a"), target(f="c"), direct, BLOBS)
    assert plan.actions == (Patch("f", "f", (p("a", "c", 70),)),)
    # A chain that costs as much as the blob loses to the blob.
    dear = index(p("a", "b", 250), p("b", "c", 250))
    assert plan_sync(local(f="a"), target(f="c"), dear, BLOBS).actions == (Fetch("f", h("c"), 500),)


def test_gap_beyond_patches_falls_back_to_blob() -> None:
    plan = plan_sync(local(f="y"), target(f="c"), index(p("a", "c", 10)), BLOBS)
    assert plan.actions == (Fetch("f", h("c"), 500),)


def test_downloads_are_counted_once() -> None:
    plan = plan_sync(
        local(f="a", g="a"),
        target(f="b", g="b", h="c", i="c"),
        index(p("a", "b", 100)),
        BLOBS,
    )
    assert plan.count(Patch) == 2 and plan.count(Fetch) == 2
    assert plan.download_bytes == 100 + 500


def test_unknown_blob_size_counts_raw_size() -> None:
    plan = plan_sync({}, target(f="zzz"), index(), {})
    assert plan.actions == (Fetch("f", h("zzz"), 1000),)


def test_links() -> None:
    manifest = Manifest.of(
        [FileEntry("lib.so", 0, h("lib.so.1"), link="lib.so.1"), FileEntry("lib.so.1", 10, h("a"))]
    )
    fresh = plan_sync({}, manifest, index(), BLOBS)
    assert fresh.actions == (Link("lib.so", "lib.so.1"), Fetch("lib.so.1", h("a"), 500))
    synced = plan_sync(
        {"lib.so": LocalFile(0, h("lib.so.1")), "lib.so.1": LocalFile(10, h("a"))},
        manifest,
        index(),
        BLOBS,
    )
    assert synced.actions == (Keep("lib.so"), Keep("lib.so.1"))
    assert synced.download_bytes == 0


tags = st.sampled_from("abcdxy")
paths = st.sampled_from(["p1", "p2", "p3", "d/p4", "d/p5"])


@settings(max_examples=100, deadline=None)
@given(
    have=st.dictionaries(paths, tags),
    want=st.dictionaries(paths, tags, min_size=1),
    edges=st.lists(st.tuples(tags, tags, st.integers(1, 600)), max_size=12),
)
def test_plan_properties(
    have: dict[str, str], want: dict[str, str], edges: list[tuple[str, str, int]]
) -> None:
    by_pair = {(b, t): size for b, t, size in edges if b != t}
    patches = index(*(p(b, t, s) for (b, t), s in sorted(by_pair.items())))
    plan = plan_sync(local(**have), target(**want), patches, BLOBS)
    # One action per target path, a removal per stale local path, in path order.
    kept = [a.path for a in plan.actions if not isinstance(a, Remove)]
    assert kept == sorted(want)
    assert [a.path for a in plan.actions if isinstance(a, Remove)] == sorted(set(have) - set(want))
    # Never worse than fetching every missing content whole.
    missing = {h(t) for t in want.values()} - {h(t) for t in have.values()}
    assert plan.download_bytes <= 500 * len(missing)
    for a in plan.actions:
        if isinstance(a, Patch):
            assert local(**have)[a.base_path].sha256 == a.steps[0].base_sha256
            assert a.steps[-1].target_sha256 == h(want[a.path])
            assert a.size < 500
    # Deterministic whatever order the local listing comes in.
    reordered = dict(reversed(list(local(**have).items())))
    assert plan_sync(reordered, target(**want), patches, BLOBS) == plan
