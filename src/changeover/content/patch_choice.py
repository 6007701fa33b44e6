"""How each patch of a version is made: which methods, at which level, within a budget.

A pure function of data: per (base, target) pair, what the target is (its
:class:`~changeover.content.filekind.FileKind`, sniffed from its first bytes), the two
sizes, and how old the base's version is; for the whole version, a publish budget of
CPU-seconds. The publisher (:mod:`changeover.content.publish`) builds what it returns.

Each pair gets a *ladder* of options, best first; an option is one or more candidates,
all built, the smallest kept:

* executables and libraries within HDiffPatch's memory bound: HDiffPatch coded by zstd
  and by LZMA2 (one diff, recoded: LZMA2 is 5-9 % smaller on the libraries measured), plus
  zstd -19 when the file is small enough for both to be cheap; then HDiffPatch's two
  codings; then its zstd one alone; then zstd -9 and -3. Measured on real consecutive
  releases of shared libraries (README), HDiffPatch makes 40-70 % of zstd -19's patch,
  which is 15-40 % smaller than zstd -9's;
* bigger executables: zstd -19 (not -9 or -3 as before: their new bytes are code, not
  assets), then -15, -9, -3;
* compressed data and media: zstd -3: coded bytes hold no redundancy a stronger level
  could find, and the long-distance matcher finds what is unchanged at any level; small
  ones get HDiffPatch too, which finds shorter matches in them (a gzipped changelog with
  a new entry: 0.7 % smaller than zstd's, for milliseconds);
* anything else (assets, archives, data): small files get zstd -19 and HDiffPatch (both
  codings); up to
  ``MID_BYTES`` zstd -9 and HDiffPatch (the generator's 18 MB paks: 1-2 % smaller than
  -9, in 2 s each; from older versions they are the first to go over budget), then -3;
  above it
  zstd -3 (on big asset files -3 is within a
  few percent of -19 at a hundredth of the time, see the levels' history in ``publish``);
* a *fresh* pair, from the empty content (a file no earlier version had,
  :data:`~changeover.content.patch_index.EMPTY_SHA256`): zstd -19, then -9, then nothing
  (the empty option: the blob, which the store compressed at -3 on upload, serves);
  nothing at all for compressed data and media, which no level makes smaller.

Every pair starts on its first rung. While the estimated cost of all of them exceeds the
budget, the step down that saves the most CPU is taken, weighted so that pairs from older
versions (fewer hosts still run them) step down first, and dropping a second candidate
before weakening a first. The costs are estimates per MiB
(:class:`CostModel`), set from measurements on one machine; on another, the publisher
scales them by how much more CPU its patches actually took there, zstd's and
HDiffPatch's apart (:class:`Calibration`, learned from each publish), so the budget holds
on the machine it runs on.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from changeover.content import hdiff
from changeover.content.filekind import FileKind
from changeover.content.patch_index import PatchMethod

MIB = 1 << 20
BOTH_UP_TO = 8 * MIB
"""Targets up to this size get two methods tried where both can win."""
MID_BYTES = 64 * MIB
"""Non-executables above this size get zstd -3 only."""
DOWNGRADE_LOSS = 4
"""How much worse, per CPU-second saved, a step to a weaker method or level is than
dropping a second candidate (which rarely wins: zstd -19 lost to HDiffPatch on every
library measured)."""


@dataclass(frozen=True, slots=True, order=True)
class Candidate:
    """One patch to build: a method and its zstd level (HDiffPatch compresses with zstd)."""

    method: PatchMethod
    level: int


Option = tuple[Candidate, ...]


def _z(level: int) -> Candidate:
    return Candidate(PatchMethod.ZSTD, level)


_RUNS = PatchMethod.ZSTD_RUNS


def _zr(level: int) -> Candidate:
    """zstd at ``level`` with long unchanged stretches as copies (``content.patch``): for
    big files, where zstd's per-block cost over what did not change adds up (about 14
    bytes a 128 KiB); a patch that finds none is a plain zstd one."""
    return Candidate(_RUNS, level)


HDIFF = Candidate(PatchMethod.HDIFFPATCH, 22)
"""HDiffPatch codes its diff with zstd -22: on the real libraries measured (libcrypto 3,
libpython 3.11) 60-65 bytes smaller than at -19, for about 10 % more time."""
HDIFF_LZMA2 = Candidate(PatchMethod.HDIFFPATCH_LZMA2, 9)
"""The same diff coded by LZMA2 (its level 9); built after :data:`HDIFF`, it recodes that
one's diff (``content.publish``), so beside it it costs only the coding."""


CostClass = Literal["zstd", "hdiff"]
"""What a candidate's CPU is spent on: zstd's matcher, or HDiffPatch's suffix array and
its recoding. Each is calibrated apart: on a machine measured, fresh zstd -19 patches
took 0.7x the model's estimate and HDiffPatch's 1.9x."""
COST_CLASSES: tuple[CostClass, ...] = ("zstd", "hdiff")


def cost_class(method: PatchMethod) -> CostClass:
    hdiffs = (PatchMethod.HDIFFPATCH, PatchMethod.HDIFFPATCH_LZMA2)
    return "hdiff" if method in hdiffs else "zstd"


@dataclass(frozen=True, slots=True)
class PatchTask:
    """One (base, target) pair to patch."""

    kind: FileKind
    old_size: int
    new_size: int
    base_rank: int = 0
    """0 for a base from the most recent earlier version, 1 for the one before, …"""


@dataclass(frozen=True, slots=True)
class CostModel:
    """Estimated CPU-seconds of building and checking one patch, per MiB."""

    zstd_level3_s_per_mib: float = 0.005
    zstd_level19_s_per_mib: float = 1.0
    """zstd -19 with the long-distance matcher, about 1 CPU-second per MB (publish's notes);
    levels in between are interpolated geometrically."""
    hdiff_s_per_mib: float = 0.08
    """Per MiB of old plus new file: suffix array over the old file, matching the new one."""
    lzma2_recode_s_per_mib: float = 0.05
    """Per MiB of new file, recoding a diff by LZMA2 (0.02-0.03 measured on libraries)."""

    def cost_s(self, candidate: Candidate, task: PatchTask) -> float:
        if candidate.method is PatchMethod.HDIFFPATCH:
            return self.hdiff_s_per_mib * (task.old_size + task.new_size) / MIB
        if candidate.method is PatchMethod.HDIFFPATCH_LZMA2:
            return self.lzma2_recode_s_per_mib * task.new_size / MIB
        # zstd-runs: finding the runs reads both files once, a few ms a MiB: as zstd.
        ratio = self.zstd_level19_s_per_mib / self.zstd_level3_s_per_mib
        per_mib = self.zstd_level3_s_per_mib * ratio ** ((max(3, candidate.level) - 3) / 16)
        return float(per_mib * task.new_size / MIB)

    def option_s(self, option: Option, task: PatchTask) -> float:
        return sum(self.by_class(option, task).values())

    def by_class(self, option: Option, task: PatchTask) -> dict[CostClass, float]:
        """:meth:`option_s` split by :data:`CostClass`."""
        costs = dict.fromkeys(COST_CLASSES, 0.0)
        for c in option:
            costs[cost_class(c.method)] += self.cost_s(c, task)
        if HDIFF_LZMA2 in option and HDIFF not in option:  # it makes its own diff
            costs["hdiff"] += self.cost_s(HDIFF, task)
        return costs

    def scaled(self, factors: Mapping[CostClass, float]) -> CostModel:
        """This model with each class's rates multiplied by its factor."""
        z, h = factors.get("zstd", 1.0), factors.get("hdiff", 1.0)
        return CostModel(
            zstd_level3_s_per_mib=self.zstd_level3_s_per_mib * z,
            zstd_level19_s_per_mib=self.zstd_level19_s_per_mib * z,
            hdiff_s_per_mib=self.hdiff_s_per_mib * h,
            lzma2_recode_s_per_mib=self.lzma2_recode_s_per_mib * h,
        )


@dataclass(frozen=True, slots=True)
class PublishBudget:
    cpu_s: float = 90.0
    """CPU-seconds for all of a version's patches: the issue's 60 s on 2 cores, less a
    quarter for unpacking, checking and indexing."""
    hdiff_max_bytes: int = hdiff.MAX_BYTES
    methods: frozenset[PatchMethod] = field(default_factory=lambda: frozenset(PatchMethod))
    """The methods allowed; zstd alone serves clients that predate methods best (they see
    only zstd patches, see :mod:`changeover.content.patch_index`)."""
    costs: CostModel = field(default_factory=CostModel)


class Calibration:
    """How much more CPU this machine takes to build patches than :class:`CostModel`
    estimates, per :data:`CostClass`: the ratio of measured to estimated CPU-seconds,
    learned from each publish, and bounded. The cost model's rates were measured on one
    machine; a machine twice as slow would otherwise spend twice the budget.

    A ratio above the factor is taken at once, one below moves it half way (in log
    space): a publish over its deadline is what the budget is there to prevent, a few
    bytes more for a publish or two is not. Thread-safe: publishes may run side by side.
    """

    MIN_OBSERVED_S = 2.0
    """A class's work estimated under this in a publish is too short to measure it by."""
    WEIGHT = 0.5
    """How far a ratio below the factor moves it, in log space."""
    BOUNDS = (0.25, 8.0)

    def __init__(self, factor: float = 1.0) -> None:
        self._factors = dict.fromkeys(COST_CLASSES, self._bounded(factor))
        self._lock = threading.Lock()

    @property
    def factors(self) -> dict[CostClass, float]:
        with self._lock:
            return dict(self._factors)

    def observe(
        self, estimated_s: Mapping[CostClass, float], actual_s: Mapping[CostClass, float]
    ) -> None:
        """A publish whose patches were estimated at ``estimated_s`` CPU-seconds per class
        (by the uncalibrated model) took ``actual_s``."""
        with self._lock:
            for cls in COST_CLASSES:
                estimated, actual = estimated_s.get(cls, 0.0), actual_s.get(cls, 0.0)
                if estimated < self.MIN_OBSERVED_S or actual <= 0:
                    continue
                sample, now = self._bounded(actual / estimated), self._factors[cls]
                if sample < now:
                    log_f = (1 - self.WEIGHT) * math.log(now) + self.WEIGHT * math.log(sample)
                    sample = math.exp(log_f)
                self._factors[cls] = self._bounded(sample)

    def budget(self, budget: PublishBudget) -> PublishBudget:
        """``budget`` for this machine: its cost model scaled by what was learned."""
        return replace(budget, costs=budget.costs.scaled(self.factors))

    @classmethod
    def _bounded(cls, factor: float) -> float:
        low, high = cls.BOUNDS
        return min(high, max(low, factor))


def ladder(task: PatchTask, budget: PublishBudget) -> tuple[Option, ...]:
    """The options for one pair, best first, restricted to the budget's methods; never
    empty (zstd -3 is always allowed: every client applies it). A fresh pair's last option
    is the empty one: build nothing."""
    if task.old_size == 0:
        return ((),) if task.kind.entropy_coded else ((_z(19),), (_z(9),), ())
    hdiff_ok = hdiff.usable(task.old_size, task.new_size, budget.hdiff_max_bytes)
    small = task.new_size <= BOTH_UP_TO
    z = _z if small else _zr
    rungs: list[Option]
    both = (HDIFF, HDIFF_LZMA2)
    if task.kind.executable and hdiff_ok:
        rungs = [(*both, _z(19)) if small else both, both, (HDIFF,), (z(9),), (z(3),)]
    elif task.kind.executable:
        rungs = [(z(19),), (z(15),), (z(9),), (z(3),)]
    elif task.kind.entropy_coded:
        rungs = [(_z(3), HDIFF), (_z(3),)] if small and hdiff_ok else [(z(3),)]
    elif small:
        rungs = [(_z(19), *both) if hdiff_ok else (_z(19),), (_z(19),), (_z(9),), (_z(3),)]
    elif task.new_size <= MID_BYTES and hdiff_ok:
        rungs = [(z(9), HDIFF), (HDIFF,), (z(9),), (z(3),)]
    elif task.new_size <= MID_BYTES:
        rungs = [(z(9),), (z(3),)]
    else:
        rungs = [(z(3),)]
    out: list[Option] = []
    for option in rungs:
        # Where copy runs are not allowed, the plain zstd patch of the same level.
        allowed = [
            _z(c.level) if c.method not in budget.methods and c.method is _RUNS else c
            for c in option
        ]
        kept = tuple(c for c in allowed if c.method in budget.methods or c == _z(3))
        if kept and kept not in out:
            out.append(kept)
    return tuple(out) if out else ((_z(3),),)


def choose(tasks: Sequence[PatchTask], budget: PublishBudget | None = None) -> list[Option]:
    """The option to build for each task, in order (see the module docstring)."""
    budget = budget or PublishBudget()
    costs = budget.costs
    ladders = [ladder(t, budget) for t in tasks]
    rung = [0] * len(tasks)
    total = sum(costs.option_s(lad[0], t) for lad, t in zip(ladders, tasks, strict=True))

    def step(i: int) -> tuple[float, float] | None:
        """(priority, CPU saved) of moving task i one rung down, if it can."""
        if rung[i] + 1 >= len(ladders[i]):
            return None
        now, then = ladders[i][rung[i]], ladders[i][rung[i] + 1]
        saved = costs.option_s(now, tasks[i]) - costs.option_s(then, tasks[i])
        # Dropping a second candidate loses bytes only where it would have won; a weaker
        # method or level loses them on every file.
        loss = 1 if set(then) <= set(now) else DOWNGRADE_LOSS
        return saved * 2 ** tasks[i].base_rank / loss, saved

    heap: list[tuple[float, int, float]] = []
    for i in range(len(tasks)):
        s = step(i)
        if s is not None:
            heapq.heappush(heap, (-s[0], i, s[1]))
    while total > budget.cpu_s and heap:
        _, i, saved = heapq.heappop(heap)
        rung[i] += 1
        total -= saved
        s = step(i)
        if s is not None:
            heapq.heappush(heap, (-s[0], i, s[1]))
    return [lad[r] for lad, r in zip(ladders, rung, strict=True)]


def total_cost_s(tasks: Sequence[PatchTask], options: Sequence[Option], costs: CostModel) -> float:
    """The estimated CPU-seconds of building ``options`` for ``tasks``."""
    return sum(costs.option_s(o, t) for o, t in zip(options, tasks, strict=True))
