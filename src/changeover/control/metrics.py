"""Prometheus metrics of the control plane, served at ``/metrics``.

Two kinds, so that a scrape stays cheap and no hot path writes to the database for them:

* **Counted at the HTTP edge** by :class:`observability.RequestMiddleware`: allocations and
  their latency, agent heartbeats, upload bytes, content (sync) bytes and duration, and
  requests by route. These live in process memory, per replica, as Prometheus expects.
* **Kept by the allocator** (:class:`AllocatorCollector`): its batches, how they ran, and
  its queue, read from its plain counters at scrape time.
* **Read from the database at scrape time** by :class:`DatabaseCollector`: instances by
  fleet, region, profile, version and state, players, hosts, and jobs by kind and status.
  Each is one ``GROUP BY`` over indexed columns, so 10,000 instances cost a few
  milliseconds; every replica reports the same numbers (they are the database's).

Each application gets its own registry, so several apps in one process (tests) do not
collide and ``/metrics`` shows only this control plane.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from enum import IntEnum
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, inspect, literal, select, table
from sqlalchemy import column as sql_column

from changeover.control.builds.models import Version
from changeover.control.db import Database, now
from changeover.control.fleet.allocator import Allocator
from changeover.control.fleet.models import Fleet, Host, Instance, Profile, Region, live_instances
from changeover.control.fleet.services import LOST_AFTER_S
from changeover.control.jobs import JobRunner
from changeover.control.patchjobs.states import JobStatus as PatchJobStatus
from changeover.control.states import JobState

log = logging.getLogger("changeover.metrics")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SYNC_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)


def display_state_sql() -> Any:
    """``fleet.views.display_state`` as a SQL expression, so counts can group by it."""
    return case(
        (
            (Instance.desired == "stopped") & Instance.state.not_in(("stopped", "failed")),
            literal("stopping"),
        ),
        ((Instance.desired == "draining") & (Instance.state == "ready"), literal("draining")),
        (
            (Instance.state == "ready") & ((Instance.players > 0) | Instance.sdk_allocated),
            literal("allocated"),
        ),
        else_=Instance.state,
    )


class Metrics:
    """The counters and histograms fed by the request middleware, in one registry."""

    def __init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "changeover_http_requests",
            "HTTP requests by route template, method and status class.",
            ["route", "method", "status"],
            registry=r,
        )
        self.allocations = Counter(
            "changeover_allocations",
            "Server Allocate calls by result (ok, refused: no room or bad request, error).",
            ["result"],
            registry=r,
        )
        self.allocation_seconds = Histogram(
            "changeover_allocation_duration_seconds",
            "Time to answer a Server Allocate call.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.heartbeats = Counter(
            "changeover_agent_heartbeats",
            "Agent syncs (heartbeats) received, by result.",
            ["result"],
            registry=r,
        )
        self.upload_bytes = Counter(
            "changeover_upload_bytes",
            "Build bytes received by the upload endpoints (CI pushes).",
            registry=r,
        )
        self.content_bytes = Counter(
            "changeover_content_bytes",
            "Bytes served from the content tree (launcher and agent syncs).",
            registry=r,
        )
        self.content_seconds = Histogram(
            "changeover_content_request_duration_seconds",
            "Time to serve one content-tree request (a sync is many of them).",
            buckets=SYNC_BUCKETS,
            registry=r,
        )

    def child(self, metric: Counter, *labels: str) -> Counter:
        """``metric.labels(*labels)``, looked up once: prometheus_client checks the values
        and takes a lock on every call, which shows on a path taken thousands of times a
        second. (Two threads may both look one up at first; they get the same child.)"""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return cast(Counter, found)


class AllocatorCollector(Collector):
    """Server Allocate's group commit, from the allocator's counters: the mean batch size
    is requests over batches, the mean batch time busy seconds over batches; runs apart
    and lost races say how often a batch had to run again, one savepoint a request."""

    def __init__(self, allocator: Allocator) -> None:
        self.allocator = allocator

    def describe(self) -> list[Metric]:
        return list(self.collect())  # cheap: plain counters, no I/O

    def collect(self) -> Iterator[Metric]:
        stats = self.allocator.stats
        requests = CounterMetricFamily(
            "changeover_allocator_requests", "Allocation requests taken into a batch."
        )
        requests.add_metric([], stats.requests)
        batches = CounterMetricFamily(
            "changeover_allocator_batches",
            "Allocator transactions: together (no savepoints, the usual run) or apart (one"
            " savepoint a request, after a batch failed together).",
            labels=["run"],
        )
        batches.add_metric(["together"], stats.together)
        batches.add_metric(["apart"], stats.apart)
        lost = CounterMetricFamily(
            "changeover_allocator_lost_races",
            "Batches whose held-back updates found an instance changed by another writer.",
        )
        lost.add_metric([], stats.lost_races)
        busy = CounterMetricFamily(
            "changeover_allocator_busy_seconds",
            "Time the allocator spent running batches: its rate is the share of the time it"
            " is busy (near 1, allocations wait for the batch in progress).",
        )
        busy.add_metric([], stats.busy_s)
        pending = GaugeMetricFamily(
            "changeover_allocator_pending", "Allocation requests waiting for a batch."
        )
        pending.add_metric([], self.allocator.pending)
        yield from (requests, batches, lost, busy, pending)


class DatabaseCollector(Collector):
    """Gauges computed from the database when Prometheus scrapes."""

    def __init__(self, db: Database, runner: JobRunner) -> None:
        self.db = db
        self.runner = runner
        self._has_patch_jobs = False

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time only; describing would query the database

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            yield from self._instances()
            yield from self._hosts()
            yield from self._jobs()
            yield from self._patch_jobs()
        except Exception:  # a scrape must answer: report the failure as a metric
            log.exception("collecting database metrics failed")
            up = GaugeMetricFamily("changeover_db_metrics_up", "1 if the last scrape read the DB.")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("changeover_db_metrics_up", "1 if the last scrape read the DB.")
        up.add_metric([], 1)
        yield up
        leadership = self.runner.leadership
        term = None if leadership is None else leadership.term
        leader = GaugeMetricFamily(
            "changeover_leader", "1 if this replica leads (runs the work that runs once)."
        )
        leader.add_metric([], 0 if leadership is not None and term is None else 1)
        yield leader
        took = GaugeMetricFamily(
            "changeover_db_metrics_collect_seconds", "Time the last scrape spent in the DB."
        )
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _instances(self) -> Iterator[Metric]:
        state = display_state_sql()
        q = (
            select(
                Fleet.name,
                Region.name,
                Profile.name,
                Version.number,
                state,
                func.count(),
                func.coalesce(func.sum(Instance.players), 0),
            )
            .select_from(Instance)
            .join(Fleet, Fleet.id == Instance.fleet_id)
            .join(Host, Host.id == Instance.host_id)
            .join(Region, Region.id == Host.region_id)
            .join(Profile, Profile.id == Instance.profile_id)
            .join(Version, Version.id == Profile.version_id)
            .where(live_instances())
            .group_by(Fleet.name, Region.name, Profile.name, Version.number, state)
        )
        instances = GaugeMetricFamily(
            "changeover_instances",
            "Game-server instances by fleet, region, profile, image version and state.",
            labels=["fleet", "region", "profile", "version", "state"],
        )
        players = GaugeMetricFamily(
            "changeover_players",
            "Players on instances (open sessions), by fleet, region, profile and version.",
            labels=["fleet", "region", "profile", "version"],
        )
        totals: dict[tuple[str, ...], int] = {}
        with self.db.read() as s:
            for fleet, region, profile, version, st, n, p in s.execute(q):
                instances.add_metric([fleet, region, profile, str(version), str(st)], n)
                key: tuple[str, ...] = (fleet, region, profile, str(version))
                totals[key] = totals.get(key, 0) + int(p)
        for key, p in totals.items():
            players.add_metric(list(key), p)
        yield instances
        yield players

    def _hosts(self) -> Iterator[Metric]:
        alive = Host.last_seen_at >= now() - LOST_AFTER_S
        q = (
            select(
                Region.name, case((alive, literal("alive")), else_=literal("lost")), func.count()
            )
            .select_from(Host)
            .join(Region, Region.id == Host.region_id)
            .group_by(Region.name, alive)
        )
        hosts = GaugeMetricFamily(
            "changeover_hosts", "Hosts (agents) by region and liveness.", labels=["region", "state"]
        )
        with self.db.read() as s:
            for region, st, n in s.execute(q):
                hosts.add_metric([region, st], n)
        yield hosts

    def _jobs(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "changeover_jobs",
            "Jobs of the job runner (updates, diffs, versions, switches) by kind and status.",
            labels=["kind", "status"],
        )
        with self.db.read() as s:
            for kind in self.runner.kinds:
                m = kind.model
                rows = s.execute(select(m.status, func.count()).group_by(m.status))
                for status, n in rows:
                    jobs.add_metric([kind.name, _label(JobState, status)], n)
        yield jobs
        alive = GaugeMetricFamily("changeover_job_runner_alive", "1 if the job runner runs.")
        alive.add_metric([], 1 if self.runner.alive else 0)
        yield alive

    def _patch_jobs(self) -> Iterator[Metric]:
        """Patch jobs by status, and the progress of those not finished.

        Read through a bare table so this module need not import the patch-job engine.
        """
        if not self._has_patch_jobs:
            self._has_patch_jobs = inspect(self.db.engine).has_table("patch_jobs")
            if not self._has_patch_jobs:
                return
        pj = table("patch_jobs", sql_column("id"), sql_column("status"), sql_column("progress"))
        by_status = GaugeMetricFamily(
            "changeover_patch_jobs", "Patch jobs by status.", labels=["status"]
        )
        selected = GaugeMetricFamily(
            "changeover_patch_job_selected",
            "Instances an unfinished patch job moves.",
            labels=["job"],
        )
        progress = GaugeMetricFamily(
            "changeover_patch_job_instances",
            "Instances of each unfinished patch job by what the job last asked of them"
            " (start, drain, notice, stop, ...).",
            labels=["job", "intent"],
        )
        with self.db.read() as s:
            for status, n in s.execute(select(pj.c.status, func.count()).group_by(pj.c.status)):
                by_status.add_metric([_label(PatchJobStatus, status)], n)
            running = s.execute(
                select(pj.c.id, pj.c.progress)
                .where(pj.c.status < int(PatchJobStatus.COMPLETED))
                .order_by(pj.c.id)
                .limit(100)
            )
            for job, raw in running:
                total, intents = _intent_counts(raw)
                selected.add_metric([str(job)], total)
                for intent, n in intents.items():
                    progress.add_metric([str(job), intent], n)
        yield by_status
        yield selected
        yield progress


def _label(states: type[IntEnum], value: int) -> str:
    """A status as its lower-case name (``running``), or the number if it is unknown."""
    try:
        return states(int(value)).name.lower()
    except ValueError:
        return str(value)


def _intent_counts(raw: str | None) -> tuple[int, dict[str, int]]:
    """Instances selected, and per intent, in a stored ``JobProgress`` (``codec``)."""
    try:
        data = json.loads(raw or "{}")
        selected = len(data.get("selection") or [])
        counts: dict[str, int] = {}
        for intent in (data.get("intents") or {}).values():
            counts[str(intent)] = counts.get(str(intent), 0) + 1
    except (ValueError, TypeError, AttributeError):
        return 0, {}
    return selected, counts
