"""The patch-job reconciler: a periodic task of the job runner that drives every job.

Each pass (``tick``):

1. replay: every recorded action not applied yet (a crash hit between recording and
   applying) is applied now, in the order it was recorded;
2. for each unfinished job, read its row, what changed among its instances since the last
   pass (its ``job_view.JobView``, kept in memory and read in full after a restart) and
   which of its stage requests the agents report staged. If none of that changed since
   the last pass and its wake-up time has not come, skip it: a pass with nothing to do only
   reads. Where its members stand (``fleet_view.summarize``) is stored with the job when
   it changed, for the API, the dashboard and the reports;
3. decide: before its start a job asks ``schedule.queue_decision`` whether it may run
   (SCHEDULED / WAITING with ``waiting_for`` / PRESTAGING, with ``schedule.prestage``
   staging the new builds from T-5 min); once runnable (or cancelled) the method's planner
   decides;
4. record, in ONE transaction guarded by a compare-and-set on ``patch_jobs.revision``:
   progress, status, reason, wake-up, the actions (unapplied) and the events. Another
   process (or this one after a restart) that planned from the same revision loses the
   compare-and-set and records nothing, so a decision is never taken twice;
5. apply each action in its own transaction that first marks it applied (a
   compare-and-set on ``applied_at IS NULL``) and then writes its effect (``appliers``),
   so each action takes effect exactly once even with two processes replaying it.

The planner never issues a key twice (``progress.issued``), the action table is unique by
key, and each applier is idempotent: nothing is done twice, nothing recorded is lost.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from changeover.control.builds.models import Version
from changeover.control.db import Database, among, now
from changeover.control.fleet.models import Host, Profile
from changeover.control.fleet.services import LOST_AFTER_S
from changeover.control.logs import job_context
from changeover.control.patchjobs import JobInstances, Memo, appliers, codec, plan
from changeover.control.patchjobs.checks import CheckRunner
from changeover.control.patchjobs.fleet_view import summarize
from changeover.control.patchjobs.job_view import JobView
from changeover.control.patchjobs.model import (
    PENDING,
    Decision,
    InstanceView,
    JobProgress,
    JobSpec,
)
from changeover.control.patchjobs.records import HostStageRequest, PatchJob, PatchJobAction
from changeover.control.patchjobs.schedule import (
    QueuedJob,
    prestage,
    queue_decision,
    status_before_start,
)
from changeover.control.patchjobs.states import JobStatus
from changeover.control.patchjobs.storage import (
    TERMINAL,
    add_event,
    add_events,
    cas_write,
    dump_progress,
    event_row,
    progress_of,
    remember_progress,
    spec_of,
)

log = logging.getLogger("changeover.patchjobs")
REASON_LEN: Final = 4000
REPLAY_BATCH: Final = 200
"""Actions applied per transaction: one commit each would cost a disk flush per instance."""
KEYS_PER_READ: Final = 500
"""Keys per ``IN (...)``: well under every database's limit on bound parameters."""
SYNCS_FIRST_ABOVE: Final = 4
"""Hosts' syncs being answered at once above which the reconciler makes way for them
between its transactions (``make_way``)."""
MAKE_WAY_AT_MOST_S: Final = 0.1
"""The longest it makes way at one point: a job slows down under load, never stops."""


def make_way(
    answering: Callable[[], int],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Wait while more than ``SYNCS_FIRST_ABOVE`` syncs are being answered, at most
    ``MAKE_WAY_AT_MOST_S``; the seconds waited.

    One process answers the hosts and runs the jobs, and Python runs one thread at a time:
    under a big job the reconciler's passes took a third of the process and the hosts'
    syncs queued behind them for seconds, close to the 10 s after which a silent host is
    lost. A host's sync is the more urgent: the job's next step waits a little instead."""
    started = clock()
    while answering() > SYNCS_FIRST_ABOVE and clock() - started < MAKE_WAY_AT_MOST_S:
        sleep(0.005)
    return clock() - started


@dataclass(frozen=True)
class _Seen:
    """What a job's last pass looked at, and when it wanted to be asked again."""

    key: object
    wake_at: float | None


def staged_pairs(s: Session, job_id: int) -> frozenset[tuple[str, int]]:
    """(host, profile) of the job's stage requests whose build the host reports staged."""
    rows = s.execute(
        select(
            HostStageRequest.host_name,
            HostStageRequest.profile_id,
            Version.manifest_id,
            Host.staged,
        )
        .join(Profile, Profile.id == HostStageRequest.profile_id)
        .join(Version, Version.id == Profile.version_id)
        .join(Host, Host.name == HostStageRequest.host_name)
        .where(HostStageRequest.job_id == job_id)
    )
    return frozenset((h, p) for h, p, m, staged in rows if m in json.loads(staged or "[]"))


class Reconciler:
    """Drives every patch job (see the module docstring). One per control-plane process."""

    def __init__(
        self,
        db: Database,
        checks: CheckRunner | None = None,
        on_release: Callable[[], object] | None = None,
        heard: Callable[[float], frozenset[int]] | None = None,
        answering: Callable[[], int] | None = None,
    ) -> None:
        self.db = db
        self.heard = heard or (lambda _since: frozenset())
        """Hosts this process heard from since a time, whatever the database says yet
        (``fleet.quiet.SyncMemory.heard``): a host waiting for our answer is not lost."""
        self.answering = answering or (lambda: 0)
        """Hosts' syncs this process is answering now (``SyncMemory.answering``): above
        ``SYNCS_FIRST_ABOVE``, each pass makes way for them between its transactions."""
        self.checks = checks or CheckRunner(db)
        self.on_release = on_release
        """Called after a commit that moved a client branch (``ReleaseClient``): the
        publisher, so launchers see the release at once rather than at its next pass."""
        self._seen: dict[int, _Seen] = {}
        self._views: dict[int, JobView] = {}
        self._memos: dict[int, Memo] = {}
        """Per job, what its last passes found settled: a pass judges what changed."""
        self._summaries: dict[int, str] = {}
        """The summary each job's row holds, as this process last wrote or read it."""
        self.lost_from = now() + LOST_AFTER_S
        """Hosts silent since before this process started are not lost until then."""
        self._checks_resumed = False

    def forget(self) -> None:
        """Drop what this process remembers of the jobs (a replica that leads again, after
        another one did: its views and summaries may be stale), and resume the health checks
        another leader was running."""
        self._seen.clear()
        self._views.clear()
        self._memos.clear()
        self._summaries.clear()
        self._checks_resumed = False

    # -- the pass ------------------------------------------------------------------------

    def tick(self) -> None:
        t = now()
        with self.db.read() as s:
            pending = list(
                s.scalars(
                    select(PatchJobAction.job_id)
                    .where(PatchJobAction.applied_at.is_(None))
                    .distinct()
                )
            )
            jobs = list(
                s.execute(
                    select(PatchJob.id, PatchJob.spec, PatchJob.start_at, PatchJob.status)
                    .where(PatchJob.status.not_in(TERMINAL))
                    .order_by(PatchJob.id)
                )
            )
        for job_id in pending:
            with job_context("patchjob", job_id):
                self.replay(job_id)
        if not self._checks_resumed:
            self._checks_resumed = True
            self.resume_checks()
        queue = [
            QueuedJob(
                j.id,
                j.start_at,
                _footprint(j.spec),
                JobStatus(j.status),
            )
            for j in jobs
        ]
        live = {j.id for j in jobs}
        for kept in (self._seen, self._views, self._memos, self._summaries):
            for job_id in [k for k in kept if k not in live]:
                del kept[job_id]
        for j in jobs:
            make_way(self.answering)
            with job_context("patchjob", j.id):
                try:
                    self.run_job(j.id, queue, t)
                except Exception:  # one job's trouble must not stop the others
                    log.exception("patch job %s: planning pass failed", j.id)

    def run_job(self, job_id: int, queue: Sequence[QueuedJob], t: float) -> None:
        with self.db.read() as s:
            job = s.get(PatchJob, job_id)
            if job is None or JobStatus(job.status).terminal:
                return
            spec = spec_of(job)
            progress = progress_of(job)
            view = self._views.get(job_id)
            if view is None or view.fleet_ids != frozenset(spec.fleet_ids):
                view = self._views[job_id] = JobView(job_id, spec.fleet_ids)
            view.refresh(s, t, self.lost_from, self.heard(t - LOST_AFTER_S))
            staged = staged_pairs(s, job_id)
            revision = job.revision
            start_at = job.start_at
            old_json = job.progress
            old_waiting = job.waiting_for
            old_status = job.status
            if job.summary is not None:
                self._summaries.setdefault(job_id, job.summary)
        others = tuple((q.job_id, int(q.status), q.start_at) for q in queue if q.job_id != job_id)
        key = (revision, view.version, staged, others)
        seen = self._seen.get(job_id)
        if seen is not None and seen.key == key and (seen.wake_at is None or t < seen.wake_at):
            return
        views = view.views()
        progress = replace(progress, staged=progress.staged | staged)
        memo = self._memos.setdefault(job_id, Memo())
        decision, waiting_for = self._decide(
            spec, progress, views, view.table, memo, queue, start_at, t
        )
        new_json = dump_progress(decision.progress)
        waiting_json = json.dumps(list(waiting_for))
        self._seen[job_id] = _Seen(key, decision.wake_at)
        unchanged = (
            not decision.actions
            and new_json == old_json
            and waiting_json == old_waiting
            and int(decision.progress.status) == old_status
        )
        if unchanged:
            self._keep_summary(job_id, spec, decision.progress, views)
            return
        # ``progress`` is the recorded one (``progress_of`` parses each revision once), with
        # only ``staged`` merged in: its phase is the one recorded.
        if self._record(job_id, revision, progress, decision, new_json, waiting_json, t):
            self._keep_summary(job_id, spec, decision.progress, views)
            self.replay(job_id)
        else:
            self._seen.pop(job_id, None)  # lost the race: look again at the next pass

    def _keep_summary(
        self, job_id: int, spec: JobSpec, progress: JobProgress, views: Sequence[InstanceView]
    ) -> None:
        """Store where the job's members stand, if that changed. Derived data, written
        without the compare-and-set: any pass's summary is as true as the views it saw."""
        summary = json.dumps(summarize(job_id, spec, progress, views), sort_keys=True)
        if self._summaries.get(job_id) == summary:
            return
        with self.db.write() as s:
            s.execute(
                update(PatchJob)
                .where(PatchJob.id == job_id)
                .values(summary=summary)
                .execution_options(synchronize_session=False)
            )
        self._summaries[job_id] = summary

    def _decide(
        self,
        spec: JobSpec,
        progress: JobProgress,
        views: Sequence[InstanceView],
        table: JobInstances,
        memo: Memo,
        queue: Sequence[QueuedJob],
        start_at: float,
        t: float,
    ) -> tuple[Decision, tuple[int, ...]]:
        """``table`` and ``memo``: ``views`` kept between passes, and what the last passes
        learned, so the planner judges only what changed (``strategies.memo``)."""
        if progress.phase != PENDING or progress.cancel is not None:
            return plan(spec, progress, table, t, memo), ()
        me = next(q for q in queue if q.job_id == spec.job_id)
        q = queue_decision(me, queue, t)
        if q.runnable:
            return plan(spec, progress, table, t, memo), ()
        d = prestage(spec, progress, views, start_at, t)
        status = status_before_start(q, start_at, t)
        after = replace(d.progress, status=status, reason=q.reason)
        wake = d.wake_at if d.wake_at is not None else start_at
        return Decision(d.actions, after, wake), q.waiting_for

    def _record(
        self,
        job_id: int,
        revision: int,
        before: JobProgress,
        d: Decision,
        progress_json: str,
        waiting_json: str,
        t: float,
    ) -> bool:
        """Record the decision (intent before effect) under the compare-and-set."""
        after = d.progress
        with self.db.write() as s:
            job = s.get(PatchJob, job_id)
            if job is None or job.revision != revision:
                return False
            old_status = JobStatus(job.status)
            # A final status is written by the Finish action, with what finishing does (the
            # fleets' new profile) and the "finished" event, in one transaction: no reader
            # sees "Completed" while the fleets still point at the old build.
            status = old_status if after.status.terminal else after.status
            written = cas_write(
                s,
                job,
                revision,
                progress=progress_json,
                status=int(status),
                reason=after.reason[:REASON_LEN],
                waiting_for=waiting_json,
                wake_at=d.wake_at,
                updated_at=t,
            )
            if not written:
                return False
            # The row as written, without a reload (its progress is large for a big fleet)
            # and without marking it changed (it is written).
            set_committed_value(job, "status", int(status))
            set_committed_value(job, "revision", revision + 1)
            written_key = (job.id, job.created_at, job.revision)
            self._add_actions(s, job_id, d.actions, t)
            if after.phase != before.phase:
                add_event(
                    s,
                    job,
                    "phase",
                    f"phase {before.phase} -> {after.phase}",
                    t,
                    {"from": before.phase, "to": after.phase, "step": after.step},
                )
            if after.status != old_status and not after.status.terminal:
                add_event(
                    s,
                    job,
                    "status",
                    f"{after.status.label}: {after.reason}",
                    t,
                    {
                        "from": int(old_status),
                        "to": int(after.status),
                        "waiting_for": json.loads(waiting_json),
                    },
                )
        remember_progress(written_key, after)  # committed
        return True

    @staticmethod
    def _add_actions(s: Session, job_id: int, actions: Sequence[Any], t: float) -> None:
        """Record ``actions`` after the job's others, each key once: one read of the keys
        recorded before, one INSERT."""
        keys = [a.key for a in actions]
        if not keys:
            return
        seen: set[str] = set()
        for at in range(0, len(keys), KEYS_PER_READ):
            chunk = keys[at : at + KEYS_PER_READ]
            known = select(PatchJobAction.key).where(among(s, PatchJobAction.key, chunk))
            seen.update(s.scalars(known))
        seq = s.scalar(
            select(func.coalesce(func.max(PatchJobAction.seq), 0)).where(
                PatchJobAction.job_id == job_id
            )
        )
        rows: list[dict[str, Any]] = []
        for a in actions:
            if a.key in seen:
                continue  # recorded before (the key is unique): never twice
            seen.add(a.key)
            rows.append(
                {
                    "key": a.key,
                    "job_id": job_id,
                    "seq": (seq or 0) + len(rows) + 1,
                    "action": json.dumps(codec.action_to_dict(a), sort_keys=True),
                    "recorded_at": t,
                }
            )
        if rows:
            s.execute(insert(PatchJobAction), rows)

    def resume_checks(self) -> int:
        """Start again the checks a previous process started and never finished (it died
        with them): better a second run than a gate failed for want of an answer. The
        result is recorded once whoever finishes first (``CheckRunner.record``)."""
        started = 0
        with self.db.read() as s:
            # By job (the unfinished ones are few), not over every job's actions.
            unfinished = select(PatchJob.id).where(PatchJob.status.not_in(TERMINAL))
            rows = s.execute(
                select(PatchJobAction, PatchJob)
                .join(PatchJob, PatchJob.id == PatchJobAction.job_id)
                .where(
                    PatchJobAction.job_id.in_(unfinished.scalar_subquery()),
                    PatchJobAction.applied_at.is_not(None),
                    PatchJobAction.action.like('%"type": "RunCheck"%'),
                )
                .order_by(PatchJobAction.seq)
            )
            for row, job in rows:
                if row.key in progress_of(job).check_results:
                    continue
                action = codec.action_from_dict(json.loads(row.action))
                done = appliers.apply(s, job, spec_of(job), action, now())
                if done.check is not None:
                    self.checks.start(done.check)
                    started += 1
        return started

    def replay(self, job_id: int) -> int:
        """Apply the job's recorded, unapplied actions in order; how many were applied."""
        with self.db.read() as s:
            keys = list(
                s.scalars(
                    select(PatchJobAction.key)
                    .where(PatchJobAction.job_id == job_id, PatchJobAction.applied_at.is_(None))
                    .order_by(PatchJobAction.seq)
                )
            )
        applied = 0
        for at in range(0, len(keys), REPLAY_BATCH):
            if at:
                make_way(self.answering)
            batch = keys[at : at + REPLAY_BATCH]
            try:
                applied += self._apply(job_id, batch)
                continue
            except Exception:  # noqa: BLE001 -- found again, one action at a time, below
                log.debug("patch job %s: a batch failed; applying one by one", job_id)
            for key in batch:
                try:
                    applied += self._apply(job_id, [key])
                except Exception:  # left unapplied: the next pass tries again
                    log.exception("patch job %s: applying %s failed", job_id, key)
                    return applied  # keep the order: later actions may depend on this one
        return applied

    def _apply(self, job_id: int, keys: Sequence[str]) -> int:
        """Apply ``keys`` in order, in one transaction: all of them or none."""
        t = now()
        applied = 0
        started: list[Any] = []
        released = False
        with self.db.write() as s:
            job = s.get_one(PatchJob, job_id)
            spec = spec_of(job)
            # No applier writes the job's row: out of the session, it is not reloaded (with
            # its progress, large for a big fleet) after every action's expire_all below.
            s.expunge(job)
            # Mark first: of two processes replaying the same actions, each action is
            # marked by one of them, and the other writes nothing for it.
            marked = dict(
                s.execute(
                    update(PatchJobAction)
                    .where(among(s, PatchJobAction.key, keys), PatchJobAction.applied_at.is_(None))
                    .values(applied_at=t)
                    .returning(PatchJobAction.key, PatchJobAction.action)
                    .execution_options(synchronize_session=False)
                ).all()
            )
            todo = [k for k in keys if k in marked]
            actions = [codec.action_from_dict(json.loads(marked[k])) for k in todo]
            results = appliers.apply_all(s, job, spec, actions, t)
            outcomes = [
                {"k": k, "r": r.result[:REASON_LEN]} for k, r in zip(todo, results, strict=True)
            ]
            s.execute(_OUTCOME, outcomes)
            events = []
            for key, action, done in zip(todo, actions, results, strict=True):
                kind = type(action).__name__
                events.append(
                    done.event
                    or event_row(
                        job,
                        "action",
                        f"{kind} {_subject(action)}: {done.result}",
                        t,
                        {"key": key, "type": kind, "result": done.result},
                    )
                )
                if done.check is not None:
                    started.append(done.check)
                released = released or kind == "ReleaseClient"
            add_events(s, events)
            applied = len(todo)
        for check in started:  # after the commit: a check must not outlive a rolled-back mark
            self.checks.start(check)
        if released and self.on_release is not None:
            try:
                self.on_release()
            except Exception:  # published at the publisher's next periodic pass anyway
                log.exception("patch job %s: publishing the client release failed", job_id)
        return applied


_ACTIONS = cast(Table, PatchJobAction.__table__)
_OUTCOME = update(_ACTIONS).where(_ACTIONS.c.key == bindparam("k")).values(result=bindparam("r"))
"""Each applied action's outcome, by key: a plain executemany (the ORM's bulk update by
primary key spent a seventh of a busy job runner on its own bookkeeping)."""


def _subject(action: Any) -> str:
    for name in ("instance_id", "host", "fleet_ids", "branch"):
        value = getattr(action, name, None)
        if value is not None:
            return f"{name.replace('_id', '')} {value}"
    return ""


def _footprint(spec_json: str) -> frozenset[tuple[int, int]]:
    stored = json.loads(spec_json)
    versions = {int(v) for pair in stored["builds"] for v in pair}
    return frozenset((int(f), v) for f in stored["fleet_ids"] for v in versions)


__all__ = ["Reconciler", "staged_pairs"]
