"""The job spec, its knobs and defaults, the registry, and the read-only progress."""

from __future__ import annotations

from typing import Any

import pytest

from changeover.control.patchjobs import (
    METHODS,
    STATUSES,
    methods_table,
    plan,
    statuses_table,
)
from changeover.control.patchjobs.knobs import (
    ABKnobs,
    CanaryKnobs,
    DrainPolicy,
    RollingKnobs,
    StopPolicy,
)
from changeover.control.patchjobs.model import (
    BuildPair,
    InstanceView,
    JobProgress,
    JobSpec,
    JobStatus,
    Method,
    ProfileTerms,
    make_key,
)
from changeover.control.patchjobs.steps import CustomStep, StepKind
from changeover.control.patchjobs.strategies.common import batch_limits
from changeover.errors import InvalidInput
from unit.control.patchjobs.patchjob_world import NEW, OLD, T0, spec_for


def test_the_defaults_are_the_ones_design_md_promises() -> None:
    spec = spec_for(Method.ROLLING)
    assert spec.rolling == RollingKnobs("25%", "25%", 10.0, 300.0, 600.0, auto_revert=True)
    # No stop method given: each instance's profile's signal and timeout (None here).
    assert (spec.stop.signal, spec.stop.timeout_s, spec.stop.graceful) == (None, None, True)
    # Waits count with the profile's stop timeout; a profile the job knows nothing of: 30 s.
    assert spec.stop_wait_s(OLD) == 30.0
    terms = {OLD: ProfileTerms(stop_timeout_s=90.0, exclusive_state=True)}
    assert spec_for(Method.FORCED, profiles=terms).stop_wait_s(OLD) == 90.0
    assert spec_for(Method.FORCED, profiles=terms, stop=StopPolicy(None, 5)).stop_wait_s(OLD) == 5
    assert spec.drain.deadline_s == 12 * 3600
    assert spec.drain.notice_before_s == (3600, 900, 300, 60)
    assert (spec.canary.share, spec.canary.analysis_window_s, spec.canary.auto_promote) == (
        0.10,
        600.0,
        True,
    )
    assert spec.failure_threshold == 0.0
    assert spec.scheduled_start is None
    assert spec.max_run_time_s is None


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, (1, 1)),
        (3, (1, 1)),
        (4, (1, 1)),
        (6, (1, 2)),
        (8, (2, 2)),
        (10, (2, 3)),
        (100, (25, 25)),
    ],
)
def test_batch_sizes_round_unavailable_down_but_not_below_one_and_surge_up(
    n: int, expected: tuple[int, int]
) -> None:
    assert batch_limits(RollingKnobs(), n) == expected


def test_batch_sizes_take_counts_as_given() -> None:
    assert batch_limits(RollingKnobs(max_unavailable=0, max_surge=1), 10) == (0, 1)
    assert batch_limits(RollingKnobs(max_unavailable=3, max_surge=0), 10) == (3, 0)
    assert batch_limits(RollingKnobs(max_unavailable="50%", max_surge="0%"), 5) == (2, 0)


def _spec(**kw: Any) -> JobSpec:
    return spec_for(Method.ROLLING, **kw)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: _spec(job_id=0), "job_id"),
        (lambda: spec_for(9), "method"),  # type: ignore[arg-type]
        (lambda: _spec(builds=()), "builds"),
        (lambda: _spec(builds=(BuildPair(OLD, OLD),)), "builds"),
        (lambda: _spec(builds=(BuildPair(OLD, NEW), BuildPair(NEW, 300))), "builds"),
        (lambda: _spec(builds=(BuildPair(OLD, NEW), BuildPair(OLD, 300))), "builds"),
        (lambda: _spec(fleet_ids=()), "fleet_ids"),
        (lambda: _spec(fleet_ids=(1, 1)), "fleet_ids"),
        (lambda: _spec(max_run_time_s=0), "max_run_time_s"),
        (lambda: _spec(failure_threshold=1.0), "failure_threshold"),
        (lambda: _spec(emails=("not an address",)), "emails"),
        (lambda: _spec(steps=(CustomStep(StepKind.START_NEW),)), "steps"),
        (lambda: spec_for(Method.CUSTOM), "steps"),
        (lambda: RollingKnobs(max_surge="150%"), "rolling.max_surge"),
        (lambda: RollingKnobs(max_unavailable=-1), "rolling.max_unavailable"),
        (lambda: RollingKnobs(max_unavailable="a lot"), "rolling.max_unavailable"),
        (lambda: RollingKnobs(max_unavailable=0, max_surge=0), "cannot both be 0"),
        (lambda: RollingKnobs(min_healthy_time_s=-1), "rolling.min_healthy_time_s"),
        (lambda: RollingKnobs(healthy_deadline_s=5), "rolling.healthy_deadline_s"),
        (lambda: RollingKnobs(progress_deadline_s=60), "rolling.progress_deadline_s"),
        (lambda: StopPolicy(signal="SIGFOO"), "stop.signal"),
        (lambda: StopPolicy(timeout_s=float("nan")), "stop.timeout_s"),
        (lambda: DrainPolicy(deadline_s=0), "drain.deadline_s"),
        (lambda: DrainPolicy(notice_before_s=(60.0, 60.0)), "drain.notice_before_s"),
        (lambda: DrainPolicy(deadline_s=600, notice_before_s=(3600.0,)), "drain.notice_before_s"),
        (lambda: CanaryKnobs(share=0), "canary.share"),
        (lambda: CanaryKnobs(analysis_window_s=-5), "canary.analysis_window_s"),
        (lambda: ABKnobs(verify_command="  "), "ab.verify_command"),
        (lambda: ABKnobs(verify_timeout_s=0), "ab.verify_timeout_s"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_field(build: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as e:
        build()
    assert field in e.value.message


def test_notice_times_are_kept_longest_first() -> None:
    assert DrainPolicy(notice_before_s=(60.0, 3600.0, 300.0)).notice_before_s == (
        3600.0,
        300.0,
        60.0,
    )


def test_the_selection_is_the_fleets_times_the_old_builds() -> None:
    spec = spec_for(Method.FORCED, fleet_ids=(1, 2))
    assert spec.selects(InstanceView(1, 1, "h", OLD, "ready"))
    assert spec.selects(InstanceView(2, 2, "h", OLD, "ready"))
    assert not spec.selects(InstanceView(3, 3, "h", OLD, "ready"))
    assert not spec.selects(InstanceView(4, 1, "h", NEW, "ready"))


def test_health_means_ready_for_the_minimum_time() -> None:
    i = InstanceView(1, 1, "h", NEW, "ready", ready_since=T0)
    assert not i.healthy(T0 + 9.9, 10)
    assert i.healthy(T0 + 10, 10)
    assert not InstanceView(1, 1, "h", NEW, "starting").healthy(T0 + 99, 10)


def test_progress_handed_to_a_planner_cannot_be_mutated() -> None:
    p = JobProgress(issued={"job1/main/stop/1": T0})
    with pytest.raises(TypeError):
        p.issued["job1/main/stop/2"] = T0  # type: ignore[index]
    assert p == JobProgress(issued={"job1/main/stop/1": T0})


def test_keys_name_the_job_the_step_and_the_instance() -> None:
    assert make_key(7, "main", "stop", 42) == "job7/main/stop/42"
    assert make_key(7, "hold", "switch") == "job7/hold/switch/-"


def test_the_registry_lists_six_methods_and_the_statuses() -> None:
    assert [(row["id"], row["name"]) for row in methods_table()] == [
        (1, "Forced deployment"),
        (2, "Rolling update"),
        (3, "A/B deployment"),
        (4, "Bleed-off"),
        (5, "Canary"),
        (6, "Custom steps"),
    ]
    assert set(METHODS) == {1, 2, 3, 4, 5, 6}
    names = {row["id"]: row["name"] for row in statuses_table()}
    assert names[1] == "Scheduled" and names[11] == "Finalized by force"
    assert names[2] == "Waiting" and names[9] == "Rolled back"
    assert names == STATUSES
    assert [s for s in JobStatus if s.terminal] == [
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.ROLLED_BACK,
        JobStatus.CANCELLED,
        JobStatus.FINALIZED_BY_FORCE,
    ]


def test_plan_dispatches_on_the_method_and_a_finished_job_asks_for_nothing() -> None:
    spec = spec_for(Method.BLEED_OFF)
    done = JobProgress(status=JobStatus.COMPLETED, phase="done")
    d = plan(spec, done, [InstanceView(1, 1, "h", OLD, "ready")], T0)
    assert (d.actions, d.progress, d.wake_at) == ((), done, None)
    empty = plan(spec, JobProgress(), [], T0)
    assert empty.progress.status is JobStatus.COMPLETED
    assert "nothing to do" in empty.progress.reason
