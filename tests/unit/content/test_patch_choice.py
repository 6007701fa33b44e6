"""Unit tests for ``changeover.content.patch_choice``: methods and levels by what pays."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from changeover.content.filekind import FileKind
from changeover.content.patch_choice import (
    HDIFF,
    HDIFF_LZMA2,
    Calibration,
    Candidate,
    CostModel,
    PatchTask,
    PublishBudget,
    choose,
    ladder,
    total_cost_s,
)
from changeover.content.patch_index import PatchMethod

MIB = 1 << 20
Z = PatchMethod.ZSTD
UNLIMITED = PublishBudget(cpu_s=1e12)
BOTH = (HDIFF, HDIFF_LZMA2)
"""HDiffPatch's diff under both codings (one diff, recoded)."""


def z(level: int) -> Candidate:
    return Candidate(Z, level)


def zr(level: int) -> Candidate:
    """zstd with copy runs: what files over 8 MiB get instead of plain zstd."""
    return Candidate(PatchMethod.ZSTD_RUNS, level)


def best(task: PatchTask, budget: PublishBudget = UNLIMITED) -> tuple[Candidate, ...]:
    [option] = choose([task], budget)
    return option


def test_small_executables_get_both_methods_big_ones_hdiffpatch() -> None:
    for kind in (FileKind.ELF, FileKind.PE, FileKind.MACHO):
        assert best(PatchTask(kind, 5 * MIB, 5 * MIB)) == (*BOTH, z(19))
        assert best(PatchTask(kind, 19 * MIB, 19 * MIB)) == BOTH


def test_the_lzma2_coding_comes_after_the_diff_it_recodes_and_only_with_it() -> None:
    """The publisher recodes the zstd-coded diff it made first; a studio that allows only
    the methods its older launchers know gets no LZMA2 coding; alone it would cost a diff."""
    for task in (PatchTask(FileKind.ELF, 5 * MIB, 5 * MIB), PatchTask(FileKind.OTHER, MIB, MIB)):
        for option in ladder(task, UNLIMITED):
            if HDIFF_LZMA2 in option:
                assert option.index(HDIFF) < option.index(HDIFF_LZMA2)
        older = PublishBudget(cpu_s=1e12, methods=frozenset({Z, PatchMethod.HDIFFPATCH}))
        assert all(HDIFF_LZMA2 not in option for option in ladder(task, older))
    task, costs = PatchTask(FileKind.ELF, 5 * MIB, 5 * MIB), CostModel()
    assert costs.option_s((HDIFF_LZMA2,), task) == costs.option_s(BOTH, task)
    assert costs.option_s(BOTH, task) < costs.option_s((HDIFF,), task) * 2


def test_executables_beyond_hdiffpatchs_bound_keep_a_high_zstd_level() -> None:
    # Before: 9 over 8 MiB and 3 over 64 MiB, on the idea that big files are assets.
    assert best(PatchTask(FileKind.ELF, 65 * MIB, 70 * MIB)) == (zr(19),)
    assert best(PatchTask(FileKind.ELF, 70 * MIB, 60 * MIB)) == (zr(19),)


def test_coded_data_gets_a_low_level_and_other_data_by_size() -> None:
    for kind in (FileKind.COMPRESSED, FileKind.MEDIA):
        assert best(PatchTask(kind, MIB, MIB)) == (z(3), HDIFF)  # small: both are cheap
        assert best(PatchTask(kind, 20 * MIB, 20 * MIB)) == (zr(3),)
        assert best(PatchTask(kind, 500 * MIB, 500 * MIB)) == (zr(3),)
    for kind in (FileKind.OTHER, FileKind.ARCHIVE):
        assert best(PatchTask(kind, MIB, MIB)) == (z(19), *BOTH)
        assert best(PatchTask(kind, 80 * MIB, MIB)) == (z(19),)  # old file beyond HDiffPatch
        assert best(PatchTask(kind, 20 * MIB, 20 * MIB)) == (zr(9), HDIFF)
        assert best(PatchTask(kind, 20 * MIB, 20 * MIB, base_rank=1)) == (zr(9), HDIFF)
        assert best(PatchTask(kind, 80 * MIB, 20 * MIB)) == (zr(9),)  # old beyond HDiffPatch
        assert best(PatchTask(kind, 2000 * MIB, 2000 * MIB)) == (zr(3),)


def test_copy_runs_are_for_big_files_and_give_way_to_plain_zstd_where_not_allowed() -> None:
    """Files over 8 MiB get zstd with copy runs; a studio keeping clients older than that
    method on patches (``zstd,hdiffpatch``) gets plain zstd at the same level instead."""
    older = PublishBudget(cpu_s=1e12, methods=frozenset({Z, PatchMethod.HDIFFPATCH}))
    for task in (
        PatchTask(FileKind.OTHER, 20 * MIB, 20 * MIB),
        PatchTask(FileKind.ELF, 70 * MIB, 70 * MIB),
        PatchTask(FileKind.MEDIA, 500 * MIB, 500 * MIB),
    ):
        runs = ladder(task, UNLIMITED)
        plain = ladder(task, older)
        assert any(c.method is PatchMethod.ZSTD_RUNS for o in runs for c in o)
        assert not any(c.method is PatchMethod.ZSTD_RUNS for o in plain for c in o)
        swap = {zr(lv): z(lv) for lv in range(1, 23)}
        assert plain == tuple(tuple(swap.get(c, c) for c in o) for o in runs)
    small = PatchTask(FileKind.OTHER, MIB, MIB)
    assert not any(c.method is PatchMethod.ZSTD_RUNS for o in ladder(small, UNLIMITED) for c in o)


def test_a_fresh_pair_gets_a_strong_level_or_nothing() -> None:
    """From the empty content (a new file): only a level stronger than the blob's can
    win; under a short budget it steps down to nothing, not to a patch the blob equals."""
    for kind in (FileKind.OTHER, FileKind.ELF, FileKind.ARCHIVE):
        task = PatchTask(kind, 0, 5 * MIB)
        assert ladder(task, UNLIMITED) == ((z(19),), (z(9),), ())
        assert best(task) == (z(19),)
        assert choose([task], PublishBudget(cpu_s=0)) == [()]
    for kind in (FileKind.COMPRESSED, FileKind.MEDIA):
        assert ladder(PatchTask(kind, 0, 5 * MIB), UNLIMITED) == ((),)


def test_methods_can_be_restricted_to_zstd() -> None:
    only_zstd = PublishBudget(cpu_s=1e12, methods=frozenset({Z}))
    assert best(PatchTask(FileKind.ELF, 5 * MIB, 5 * MIB), only_zstd) == (z(19),)
    assert best(PatchTask(FileKind.ELF, 19 * MIB, 19 * MIB), only_zstd) == (z(9),)
    assert best(PatchTask(FileKind.OTHER, MIB, MIB), only_zstd) == (z(19),)
    for task in (PatchTask(FileKind.ELF, MIB, MIB), PatchTask(FileKind.MEDIA, MIB, MIB)):
        assert all(c.method is Z for option in ladder(task, only_zstd) for c in option)


def test_over_budget_older_bases_step_down_first() -> None:
    # A release like the issue's: 200 changed libraries of 0.75 MiB, from 3 earlier versions.
    tasks = [PatchTask(FileKind.ELF, 3 * MIB // 4, 3 * MIB // 4, rank) for rank in range(3)] * 200
    costs = CostModel()
    unlimited = choose(tasks, UNLIMITED)
    assert all(o == (*BOTH, z(19)) for o in unlimited)
    budget = PublishBudget(cpu_s=total_cost_s(tasks, unlimited, costs) / 2)
    chosen = choose(tasks, budget)
    assert total_cost_s(tasks, chosen, costs) <= budget.cpu_s
    by_rank = {
        r: [o for t, o in zip(tasks, chosen, strict=True) if t.base_rank == r] for r in range(3)
    }
    # The most recent version's patches keep every method; the oldest lost the others first.
    assert all(o == (*BOTH, z(19)) for o in by_rank[0])
    assert all(o in (BOTH, (HDIFF,)) for o in by_rank[2])


def test_second_candidates_go_before_a_first_is_weakened() -> None:
    big = PatchTask(FileKind.ELF, 20 * MIB, 20 * MIB)
    small = [PatchTask(FileKind.ELF, 2 * MIB, 2 * MIB)] * 4
    costs = CostModel()
    # Room for HDiffPatch on everything but not for the small files' zstd -19 as well.
    room = costs.option_s(BOTH, big) + sum(costs.option_s(BOTH, t) for t in small)
    chosen = choose([big, *small], PublishBudget(cpu_s=room + 1))
    assert chosen == [BOTH] * 5
    # Less room: the costliest LZMA2 coding goes before HDiffPatch itself is weakened.
    room = costs.cost_s(HDIFF, big) + sum(costs.option_s(BOTH, t) for t in small)
    assert choose([big, *small], PublishBudget(cpu_s=room + 0.01)) == [(HDIFF,), *[BOTH] * 4]


def test_a_budget_too_small_for_anything_gives_the_cheapest_rung() -> None:
    tasks = [PatchTask(FileKind.ELF, 10 * MIB, 10 * MIB), PatchTask(FileKind.OTHER, MIB, MIB)]
    assert choose(tasks, PublishBudget(cpu_s=0)) == [(zr(3),), (z(3),)]
    assert choose([], PublishBudget(cpu_s=0)) == []


kinds = st.sampled_from(list(FileKind))
sizes = st.integers(min_value=0, max_value=4000 * MIB)


@given(
    tasks=st.lists(st.builds(PatchTask, kinds, sizes, sizes, st.integers(0, 2)), max_size=30),
    cpu_s=st.floats(min_value=0, max_value=1e4),
)
def test_choice_is_within_budget_whenever_the_cheapest_rungs_are(
    tasks: list[PatchTask], cpu_s: float
) -> None:
    budget = PublishBudget(cpu_s=cpu_s)
    chosen = choose(tasks, budget)
    assert len(chosen) == len(tasks)
    floor = sum(budget.costs.option_s(ladder(t, budget)[-1], t) for t in tasks)
    assert total_cost_s(tasks, chosen, budget.costs) <= max(cpu_s, floor) * (1 + 1e-9) + 1e-9
    for task, option in zip(tasks, chosen, strict=True):
        assert option in ladder(task, budget)
        if any(c.method is PatchMethod.HDIFFPATCH for c in option):
            assert 0 < task.new_size <= 64 * MIB and task.old_size <= 64 * MIB


@pytest.mark.parametrize("level", [1, 3, 9, 19, 22])
def test_zstd_cost_rises_with_level_and_hdiffpatch_is_cheaper_than_zstd_19(level: int) -> None:
    costs, task = CostModel(), PatchTask(FileKind.ELF, 10 * MIB, 10 * MIB)
    assert costs.cost_s(z(level), task) <= costs.cost_s(z(max(3, level) + 1), task)
    assert costs.cost_s(HDIFF, task) < costs.cost_s(z(19), task)


def test_calibration_learns_each_class_apart_believes_slow_at_once_and_bounds_it() -> None:
    c = Calibration()
    assert c.factors == {"zstd": 1.0, "hdiff": 1.0}
    c.observe({"zstd": 10.0, "hdiff": 10.0}, {"zstd": 5.0, "hdiff": 40.0})
    # Slower than thought: taken at once (an overrun is what the budget prevents); faster:
    # half way, in log space (a publish or two of a few bytes more costs little).
    assert c.factors["hdiff"] == pytest.approx(4.0)
    assert c.factors["zstd"] == pytest.approx(0.5**0.5)
    c.observe({"hdiff": 10.0}, {"hdiff": 10.0})
    assert c.factors["hdiff"] == pytest.approx(2.0)
    assert c.factors["zstd"] == pytest.approx(0.5**0.5)  # not observed: unchanged
    c.observe({"hdiff": 1.0}, {"hdiff": 100.0})  # too short to judge the machine by
    c.observe({"hdiff": 10.0}, {"hdiff": 0.0})  # nothing was measured
    assert c.factors["hdiff"] == pytest.approx(2.0)
    c.observe({"zstd": 10.0, "hdiff": 10.0}, {"zstd": 10_000.0, "hdiff": 0.001})
    # Each bounded first: 0.0001 counts as 0.25, half way from 2 in log space.
    assert c.factors == {"zstd": Calibration.BOUNDS[1], "hdiff": pytest.approx(0.5**0.5)}
    for _ in range(40):
        c.observe({"hdiff": 10.0}, {"hdiff": 0.001})
    assert c.factors["hdiff"] == pytest.approx(Calibration.BOUNDS[0])  # never below it
    assert c.factors["hdiff"] >= Calibration.BOUNDS[0]
    assert Calibration(0.001).factors["zstd"] == Calibration.BOUNDS[0]


def test_the_cost_classes_add_up_to_the_option_and_scale_apart() -> None:
    task = PatchTask(FileKind.ELF, 4 * MIB, 4 * MIB)
    costs = CostModel()
    for option in [(HDIFF, HDIFF_LZMA2, z(19)), (HDIFF_LZMA2,), (z(9),), ()]:
        split = costs.by_class(option, task)
        assert sum(split.values()) == pytest.approx(costs.option_s(option, task))
        scaled = costs.scaled({"zstd": 3.0, "hdiff": 0.5}).by_class(option, task)
        assert scaled == pytest.approx({"zstd": 3 * split["zstd"], "hdiff": 0.5 * split["hdiff"]})
    assert costs.by_class((HDIFF_LZMA2,), task)["hdiff"] > costs.cost_s(HDIFF_LZMA2, task)


def test_a_slower_machine_gets_less_of_the_model_within_the_same_budget() -> None:
    tasks = [PatchTask(FileKind.ELF, 4 * MIB, 4 * MIB) for _ in range(10)]
    budget = PublishBudget(cpu_s=sum(CostModel().option_s(best(t), t) for t in tasks))
    assert Calibration().budget(budget) == budget
    slow = Calibration(4.0).budget(budget)
    assert slow.cpu_s == budget.cpu_s and slow.methods == budget.methods
    assert slow.costs == CostModel().scaled({"zstd": 4.0, "hdiff": 4.0})
    costs = CostModel()
    at_par = total_cost_s(tasks, choose(tasks, budget), costs)
    on_slow = total_cost_s(tasks, choose(tasks, slow), costs)
    assert on_slow * 4 <= budget.cpu_s + 1e-9 and on_slow < at_par
