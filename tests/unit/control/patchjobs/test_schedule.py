"""Scheduling rules with a fake clock: start lead, edit lock, pre-stage, run time, queue."""

from __future__ import annotations

from dataclasses import replace

import pytest

from changeover.control.patchjobs import plan
from changeover.control.patchjobs.model import (
    BuildPair,
    CancelMode,
    JobProgress,
    JobStatus,
    Method,
    StageBuild,
    StopInstance,
)
from changeover.control.patchjobs.schedule import (
    LEAD_S,
    QueuedJob,
    check_application_type,
    check_edit,
    check_start_time,
    edit_locked,
    footprint,
    prestage,
    queue_decision,
    status_before_start,
)
from changeover.control.patchjobs.states import JobStatus as Status
from changeover.errors import Conflict, InvalidInput
from changeover.times import utc
from unit.control.patchjobs.patchjob_world import NEW, OLD, T0, World, drive, spec_for

START = T0 + 3600


def test_an_edit_keeps_the_application_type() -> None:
    check_application_type("game", "game")
    check_application_type(None, None)
    for current, proposed in [("game", "utility"), ("utility", "game"), ("game", None)]:
        with pytest.raises(InvalidInput) as e:
            check_application_type(current, proposed)
        assert e.value.facts["field"] == "application"


def test_no_start_time_means_now_and_one_must_be_five_minutes_ahead() -> None:
    assert check_start_time(None, T0) == T0
    assert check_start_time(T0 + LEAD_S, T0) == T0 + LEAD_S
    with pytest.raises(InvalidInput) as e:
        check_start_time(T0 + 299, T0)
    assert "at least 5 minutes" in e.value.message and "299 s away" in e.value.message
    assert e.value.facts == {"field": "scheduled_start", "earliest": T0 + LEAD_S}
    with pytest.raises(InvalidInput):
        check_start_time(T0 - 10, T0)
    with pytest.raises(InvalidInput):
        check_start_time(float("nan"), T0)


def test_edits_are_locked_five_minutes_before_start_except_emails() -> None:
    spec = spec_for(Method.ROLLING, scheduled_start=START, emails=("ops@example.com",))
    faster = replace(spec, method=Method.FORCED)
    more_mail = replace(spec, emails=("ops@example.com", "qa@example.com"))
    check_edit(spec, faster, START, START - LEAD_S - 1)  # still open
    assert not edit_locked(START, START - LEAD_S - 1)
    for now in (START - LEAD_S, START - 1, START + 600):
        assert edit_locked(START, now)
        check_edit(spec, more_mail, START, now)  # e-mail addresses: any time
        with pytest.raises(Conflict) as e:
            check_edit(spec, faster, START, now)
        assert e.value.facts["fields"] == ["method"]
        assert "only emails can still change" in e.value.message
        # When, as a date people read, not as epoch seconds.
        assert f"locked since {utc(START - LEAD_S)} (5 minutes" in e.value.message


def test_moving_the_start_must_keep_the_five_minute_lead() -> None:
    spec = spec_for(Method.ROLLING, scheduled_start=START)
    check_edit(spec, replace(spec, scheduled_start=START + 600), START, T0)
    with pytest.raises(InvalidInput, match="at least 5 minutes"):
        check_edit(spec, replace(spec, scheduled_start=T0 + 60), START, T0)
    with pytest.raises(InvalidInput, match="job_id"):
        check_edit(spec, replace(spec, job_id=8), START, T0)


def test_builds_are_pre_staged_at_t_minus_5_on_every_host_the_job_touches() -> None:
    world = World()
    a, b = world.add(host="a"), world.add(host="b")
    world.add(host="c", fleet_id=2)  # another fleet: not the job's
    world.add(host="d", version_id=NEW)  # already new
    spec = spec_for(Method.FORCED, scheduled_start=START)
    early = prestage(spec, JobProgress(), world.view(), START, START - LEAD_S - 1)
    assert early.actions == () and early.wake_at == START - LEAD_S
    d = prestage(spec, JobProgress(), world.view(), START, START - LEAD_S)
    assert d.actions == (
        StageBuild("job7/stage/stage/a:200", "a", NEW),
        StageBuild("job7/stage/stage/b:200", "b", NEW),
    )
    assert d.progress.status is JobStatus.PRESTAGING and d.wake_at == START
    assert prestage(spec, d.progress, world.view(), START, START - 60).actions == ()
    # At start, the planner finds the builds staged and issues no StageBuild again.
    world.now = START
    for act in d.actions:
        world.apply(act)
    run = drive(world, spec, d.progress)
    assert run.progress.status is JobStatus.COMPLETED
    assert [k for k in run.keys if "/stage/" in k] == []
    assert {s.instance_id for s in world.stops} == {a.instance_id, b.instance_id}
    # The switch downloads nothing: every StartInstance went to a host with the build staged.
    assert {("a", NEW), ("b", NEW)} <= world.staged


def test_a_cancelled_job_is_not_pre_staged() -> None:
    world = World()
    world.add()
    p = JobProgress(cancel=CancelMode.REVERT)
    spec = spec_for(Method.FORCED)
    assert prestage(spec, p, world.view(), START, START - 60).actions == ()


def test_past_the_max_run_time_the_job_is_finalized_by_force_and_says_so() -> None:
    world = World()
    world.add(leaves=[float("inf")])  # a lobby that never ends
    spec = spec_for(Method.BLEED_OFF, max_run_time_s=3600)
    run = drive(world, spec)
    assert run.progress.status is JobStatus.FINALIZED_BY_FORCE
    assert world.now == pytest.approx(T0 + 3600)
    assert "max run time of 3600 s passed" in run.progress.reason
    assert "finalized by force" in run.progress.reason
    assert world.of_kind(StopInstance) == []  # the busy server was left alone


def test_a_job_within_its_run_time_is_not_touched_by_it() -> None:
    world = World()
    world.add()
    run = drive(world, spec_for(Method.ROLLING, max_run_time_s=3600))
    assert run.progress.status is JobStatus.COMPLETED


def _queued(job_id: int, start: float, spec_kw: dict[str, object], status: Status) -> QueuedJob:
    spec = spec_for(Method.ROLLING, job_id=job_id, **spec_kw)
    return QueuedJob(job_id, start, footprint(spec), status)


def test_jobs_on_different_instances_run_in_parallel() -> None:
    a = _queued(1, T0, {"fleet_ids": (1,)}, Status.RUNNING)
    b = _queued(2, T0, {"fleet_ids": (2,)}, Status.SCHEDULED)
    d = queue_decision(b, [a, b], T0)
    assert d.runnable and d.waiting_for == ()


def test_an_overlapping_job_waits_and_names_the_job_it_waits_for() -> None:
    a = _queued(1, T0 + 900, {"fleet_ids": (1, 2)}, Status.RUNNING)
    b = _queued(2, T0, {"fleet_ids": (2, 3)}, Status.SCHEDULED)
    d = queue_decision(b, [a, b], T0 + 60)
    assert not d.runnable and d.waiting_for == (1,)
    assert d.reason == "waiting for job 1 (same instances)"
    assert status_before_start(d, T0, T0 + 60) is Status.WAITING
    done = replace(a, status=Status.COMPLETED)
    assert queue_decision(b, [done, b], T0 + 60).runnable


def test_of_two_waiting_overlapping_jobs_the_earlier_goes_first() -> None:
    first = _queued(1, T0, {}, Status.SCHEDULED)
    second = _queued(2, T0 + 60, {}, Status.SCHEDULED)
    assert queue_decision(first, [first, second], T0).runnable
    assert queue_decision(second, [first, second], T0 + 60).waiting_for == (1,)
    cancelled = replace(first, status=Status.CANCELLED)
    assert queue_decision(second, [cancelled, second], T0 + 60).runnable


def test_a_job_moving_to_the_build_another_job_moves_from_overlaps_it() -> None:
    one = _queued(1, T0, {"builds": (BuildPair(OLD, NEW),)}, Status.RUNNING)
    two = _queued(2, T0, {"builds": (BuildPair(NEW, 300),)}, Status.SCHEDULED)
    assert queue_decision(two, [one, two], T0).waiting_for == (1,)


def test_a_job_does_not_run_before_its_start_time() -> None:
    job = _queued(1, START, {}, Status.SCHEDULED)
    d = queue_decision(job, [job], T0)
    assert not d.runnable and d.waiting_for == ()
    assert d.reason == f"scheduled to start at {utc(START)}"
    assert utc(START).endswith(" UTC") and f"{START:.0f}" not in d.reason
    assert status_before_start(d, START, T0) is Status.SCHEDULED
    assert status_before_start(d, START, START - 60) is Status.PRESTAGING


def test_a_job_cancelled_before_it_started_never_runs() -> None:
    world = World()
    world.add()
    spec = spec_for(Method.ROLLING)
    d = plan(spec, JobProgress(cancel=CancelMode.WRAP_UP), world.view(), T0)
    assert d.progress.status is JobStatus.CANCELLED
    assert [type(a).__name__ for a in d.actions] == ["Finish"]
    assert "never ran" in d.progress.reason and d.wake_at is None
