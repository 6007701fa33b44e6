"""The sync planner: the cheapest way from the files on disk to a target version.

A pure function of what is on disk (path → size and SHA-256, already verified by the
caller), the target manifest, the published patches and the stored size of each blob. The
agent and the launcher run the plan it returns; tests and the CLI preview read it.

For every file of the target, one action:

* ``Keep``: the path already holds the content;
* ``Copy``: another local path holds it (a rename, a duplicate): nothing to download;
* ``Patch``: the cheapest chain of patches that starts from content some local file has,
  or from the empty content, which every client has (a *fresh* patch: a new file
  compressed harder than its blob; ``base_path`` is then ``""``), of methods this client
  applies (a newer publisher's method is skipped).
  Usually one hop, from the version the host runs; given an index merged from several
  versions (:meth:`PatchIndex.merge`) it also finds multi-hop chains across versions, and
  takes one only when its patches add up to less than every shorter way and the blob;
* ``Fetch``: the blob, when nothing is cheaper (ties go to the blob: one request, no base);
* ``Link``: a symlink of the target that is not already in place;

and ``Remove`` for each local path the target does not have.

Every source (``Copy.from_path``, ``Patch.base_path``) names a file as it is *before* the
plan runs, so an executor stages its outputs and swaps them in at the end, as the agent and
launcher do. ``download_bytes`` counts each blob and each patch once even when several paths
need it: an executor fetches each object once.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from changeover.content.manifest import FileEntry, Manifest
from changeover.content.patch_index import EMPTY_SHA256, PatchEntry, PatchIndex, known_method

MAX_HOPS = 8
"""Longest patch chain considered; longer ones would be slow to apply for little gain."""
FROM_NOTHING = ""
"""``Patch.base_path`` of a chain that starts from the empty content (no local file)."""


class LocalFile(NamedTuple):
    """A file on disk: its size and verified SHA-256."""

    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Keep:
    path: str


@dataclass(frozen=True, slots=True)
class Copy:
    path: str
    from_path: str


@dataclass(frozen=True, slots=True)
class Patch:
    """Apply ``steps`` in order, starting from the local file ``base_path``."""

    path: str
    base_path: str
    steps: tuple[PatchEntry, ...]

    @property
    def size(self) -> int:
        return sum(s.size for s in self.steps)


@dataclass(frozen=True, slots=True)
class Fetch:
    path: str
    sha256: str
    size: int
    """Bytes to download (the stored, compressed blob)."""


@dataclass(frozen=True, slots=True)
class Link:
    path: str
    target: str


@dataclass(frozen=True, slots=True)
class Remove:
    path: str


Action = Keep | Copy | Patch | Fetch | Link | Remove


@dataclass(frozen=True)
class SyncPlan:
    """Actions for the target's files in path order, then removals in path order."""

    actions: tuple[Action, ...]
    download_bytes: int

    def count(self, kind: type[Action]) -> int:
        return sum(1 for a in self.actions if isinstance(a, kind))


class Chain(NamedTuple):
    cost: int
    base_sha256: str
    steps: tuple[PatchEntry, ...]


def cheapest_chain(
    target_sha256: str,
    have: Mapping[str, object],
    patches: PatchIndex,
    *,
    below: int,
    max_hops: int = MAX_HOPS,
) -> Chain | None:
    """The cheapest patch chain to ``target_sha256`` from any hash in ``have``, if any costs
    less than ``below`` bytes. Dijkstra backwards from the target over patch edges."""
    # Heap entries: (cost so far, hops, hash); the hash breaks ties deterministically.
    heap: list[tuple[int, int, str]] = [(0, 0, target_sha256)]
    best: dict[str, int] = {target_sha256: 0}
    # via[h]: the patch that leads from content h one hop closer to the target.
    via: dict[str, PatchEntry] = {}
    while heap:
        cost, hops, sha = heapq.heappop(heap)
        if cost > best.get(sha, cost):
            continue
        if sha != target_sha256 and sha in have:
            steps = []
            node = sha
            while node != target_sha256:
                steps.append(via[node])
                node = via[node].target_sha256
            return Chain(cost, sha, tuple(steps))
        if hops >= max_hops:
            continue
        for entry in patches.for_target(sha):
            if not known_method(entry.method):
                continue  # a newer publisher's method: this client could not apply it
            new_cost = cost + entry.size
            base = entry.base_sha256
            if new_cost >= below or new_cost >= best.get(base, below):
                continue
            best[base] = new_cost
            via[base] = entry
            heapq.heappush(heap, (new_cost, hops + 1, base))
    return None


def _pick_path(paths: list[str], preferred: str) -> str:
    return preferred if preferred in paths else paths[0]


def _plan_file(
    f: FileEntry,
    local: Mapping[str, LocalFile],
    have: Mapping[str, list[str]],
    bases: Mapping[str, list[str]],
    patches: PatchIndex,
    blob_size: Mapping[str, int],
) -> Action:
    """``have``: contents local files hold; ``bases``: the same and the empty content."""
    current = local.get(f.path)
    if current is not None and current.sha256 == f.sha256:
        return Keep(f.path)
    if f.link is not None:
        return Link(f.path, f.link)
    if f.sha256 in have:
        return Copy(f.path, _pick_path(have[f.sha256], f.path))
    fetch = Fetch(f.path, f.sha256, blob_size.get(f.sha256, f.size))
    chain = cheapest_chain(f.sha256, bases, patches, below=fetch.size)
    if chain is None:
        return fetch
    return Patch(f.path, _pick_path(bases[chain.base_sha256], f.path), chain.steps)


def plan_sync(
    local: Mapping[str, LocalFile],
    target: Manifest,
    patches: PatchIndex,
    blob_size: Mapping[str, int],
) -> SyncPlan:
    """Plan the sync of the files ``local`` describes to ``target`` (see the module doc).

    ``blob_size`` maps a hash to the bytes its blob costs to download; a hash missing from
    it counts at the file's raw size.
    """
    have: dict[str, list[str]] = {}
    for path in sorted(local):
        have.setdefault(local[path].sha256, []).append(path)
    bases = dict(have)
    bases.setdefault(EMPTY_SHA256, [FROM_NOTHING])
    actions: list[Action] = [_plan_file(f, local, have, bases, patches, blob_size) for f in target]
    actions += [Remove(p) for p in sorted(local) if target.get(p) is None]
    downloads: dict[tuple[str, str], int] = {}
    for a in actions:
        if isinstance(a, Fetch):
            downloads[("blob", a.sha256)] = a.size
        elif isinstance(a, Patch):
            for step in a.steps:
                downloads[("patch", step.path)] = step.size
    return SyncPlan(tuple(actions), sum(downloads.values()))


def upgrade_download_bytes(
    old: Manifest | None,
    new: Manifest,
    patches: PatchIndex,
    blob_size: Mapping[str, int],
) -> int:
    """What a host holding exactly ``old`` (``None``: nothing) downloads to sync to ``new``
    with the published ``patches``: the plan the agent and the launcher would run."""
    local = {f.path: LocalFile(f.size, f.sha256) for f in old or () if f.link is None}
    return plan_sync(local, new, patches, blob_size).download_bytes
