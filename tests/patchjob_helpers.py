"""Helpers for patch-job tests (imported as ``patchjob_helpers``): simulated agents that
sync in the background, a two-build fleet, and waits on a job.

``SimAgent`` is ``fleet_helpers.FakeAgent`` that also reports as staged every build its
host is asked to hold (staging is instant), so a job's stage phase moves on at the next
sync. ``Agents`` syncs a set of them every few tens of milliseconds on a thread, as real
agents do every second, and keeps the first error it met for the test to raise.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from fleet_helpers import FakeAgent, catalogue, desired_state, ok, profile, release
from tests_helpers import wait_for

TERMINAL = {7, 8, 9, 10, 11}
UNAVAILABLE = {"502:", "503:", "504:"}
"""How ``ok`` begins its message for a server that is down: its own 503, or a balancer's
502/504 for a request in flight on a replica that was killed."""


@dataclass
class SimAgent(FakeAgent):
    def sync(self, times: int = 1) -> Any:
        for _ in range(times):
            self.last = desired_state(
                self.client.post(
                    f"/agents/{self.host_id}/sync",
                    json={
                        "agent_uid": self.uid,
                        "instances": self.observed(),
                        "staged": self.last.get("versions", []),
                    },
                )
            )
        return self.last


class Agents:
    """Syncs agents in the background until stopped."""

    def __init__(
        self, agents: list[SimAgent], every_s: float = 0.05, *, tolerate_down: bool = False
    ) -> None:
        self.agents = agents
        self.every_s = every_s
        self.tolerate_down = tolerate_down
        """Ignore a server that does not answer (a crash test restarts it, an HA drill
        kills the replica behind the balancer)."""
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for a in self.agents:
                try:
                    a.sync()
                except BaseException as e:  # kept for the test to raise
                    down = isinstance(e, httpx.TransportError) or (
                        isinstance(e, AssertionError) and str(e)[:4] in UNAVAILABLE
                    )
                    if self.error is None and not (down and self.tolerate_down):
                        self.error = e
            self._stop.wait(self.every_s)

    def start(self) -> Agents:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"a simulated agent failed: {self.error}") from self.error


@contextmanager
def running(agents: list[SimAgent]) -> Iterator[Agents]:
    bg = Agents(agents).start()
    try:
        yield bg
    finally:
        bg.stop()
    bg.check()


def builds(server: Any) -> dict[str, Any]:
    """Image ``pj-arena`` with versions 1 and 2 (once per server)."""
    c = server.client()
    if c.get("/images/pj-arena").status_code == 404:
        ok(c.post("/images", json={"name": "pj-arena"}), 201)
        release(c, "pj-arena", {"bin/game": b"v1", "data": b"d"}, "1.0")
        release(c, "pj-arena", {"bin/game": b"v2", "data": b"d"}, "2.0")
    return {"agent_token": server.token("agent")}


def two_build_fleet(
    server: Any,
    prefix: str,
    hosts: list[str],
    per_host: int,
    capacity: int = 4,
    regions: tuple[str, ...] = ("eu",),
) -> tuple[httpx.Client, list[SimAgent]]:
    """Fleet ``<prefix>-fleet`` on profile ``<prefix>-v1`` (profile ``<prefix>-v2`` ready),
    every instance ready; hosts spread over ``regions`` in turn."""
    env = builds(server)
    c = server.client()
    catalogue(c, prefix, regions)
    profile(c, f"{prefix}-v1", f"{prefix}-game", "pj-arena", "1", capacity=capacity)
    profile(c, f"{prefix}-v2", f"{prefix}-game", "pj-arena", "2", capacity=capacity)
    ok(
        c.post(
            "/fleets",
            json={
                "name": f"{prefix}-fleet",
                "application": f"{prefix}-game",
                "environment": f"{prefix}-prod",
                "hosts": hosts,
                "instances_per_host": per_host,
                "profile": f"{prefix}-v1",
            },
        ),
        201,
    )
    agent_client = server.client(env["agent_token"])
    agents = [
        SimAgent(agent_client, h, f"{prefix}-{regions[n % len(regions)]}")
        for n, h in enumerate(hosts)
    ]
    for a in agents:
        a.register()
        a.sync(2)
    return c, agents


FAST = {
    "rolling": {
        "min_healthy_time_s": 0.2,
        "healthy_deadline_s": 15,
        "progress_deadline_s": 30,
        "max_unavailable": 1,
        "max_surge": 1,
    },
    "drain": {"deadline_s": 4, "notice_before_s": [3, 1]},
    "stop": {"signal": "SIGTERM", "timeout_s": 5},
}


def job_body(prefix: str, method: Any, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"{prefix} to v2",
        "environment": f"{prefix}-prod",
        "application": f"{prefix}-game",
        "method": method,
        "builds": [{"old": f"{prefix}-v1", "new": f"{prefix}-v2"}],
        "fleets": [f"{prefix}-fleet"],
        **FAST,
    }
    body.update(extra)
    return body


def wait_status(
    c: httpx.Client,
    job_id: int,
    statuses: set[int],
    bg: Agents | None = None,
    timeout_s: float = 60,
) -> Any:
    def reached() -> Any:
        if bg is not None:
            bg.check()
        job = ok(c.get(f"/patchjobs/{job_id}"))
        return job if job["status"] in statuses else None

    try:
        return wait_for(reached, timeout_s, f"patch job {job_id} to reach {sorted(statuses)}")
    except AssertionError:
        job = c.get(f"/patchjobs/{job_id}").json()
        events = c.get(f"/patchjobs/{job_id}/events").json()["events"]
        raise AssertionError(
            f"job {job_id} is {job['status_name']} ({job['reason']}); events: "
            + "; ".join(e["message"] for e in events[-15:])
        ) from None


def wait_done(c: httpx.Client, job_id: int, bg: Agents | None = None, timeout_s: float = 60) -> Any:
    return wait_status(c, job_id, TERMINAL, bg, timeout_s)


def instances(c: httpx.Client, fleet: str) -> list[dict[str, Any]]:
    return list(ok(c.get(f"/fleets/{fleet}/instances")))


def actions(c: httpx.Client, job_id: int) -> list[dict[str, Any]]:
    return list(ok(c.get(f"/patchjobs/{job_id}/actions")))


def events(c: httpx.Client, job_id: int) -> list[dict[str, Any]]:
    return list(ok(c.get(f"/patchjobs/{job_id}/events"))["events"])


def server_errors(server: Any) -> str:
    """The tracebacks in a test server's log, to explain a 500."""
    text = server.log.read_text(errors="replace")
    parts = text.split("Traceback")
    return "Traceback" + parts[-1][-4000:] if len(parts) > 1 else text[-4000:]
