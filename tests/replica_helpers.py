"""Helpers for the tests of several control-plane replicas (imported as
``replica_helpers``): who leads, whether a job's actions were applied exactly once, and
three replicas behind HAProxy."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from crash_helpers import JobProgress
from fleet_helpers import ok
from gates import unavailable
from patchjob_helpers import Agents, SimAgent, actions, events
from tests_helpers import Server, free_port, start_server, stop_server, wait_for

CONFIG = Path(__file__).parents[1] / "deploy" / "haproxy.cfg"
"""The balancer's configuration the repository ships."""

REPLICA = {"CHANGEOVER_PATCH_TICK_S": "0.1", "CHANGEOVER_LEADER_LEASE_S": "2"}
"""The replicas' settings in these tests: a quick reconciler, a leader's lease of 2 s."""


def role(srv: Server) -> dict[str, Any]:
    return dict(httpx.get(srv.url + "/readyz", timeout=5).json()["replica"])


def leads(srv: Server) -> bool:
    return bool(role(srv)["leader"])


def leader(replicas: list[Server]) -> Server:
    """The live replica that leads, once one does."""
    found: Server = wait_for(
        lambda: next((r for r in replicas if r.process.poll() is None and leads(r)), None),
        30,
        "a leader",
    )
    return found


def kill_the_one_at_work(
    replicas: list[Server],
    look: Callable[[], tuple[JobProgress | None, Server | None]],
    what: str,
    *,
    timeout_s: float = 60.0,
) -> tuple[JobProgress, Server]:
    """SIGKILL the replica ``look`` names, once ``look`` says the work started and has not
    finished; return what it saw then, and the victim.

    Every look freezes every live replica first (SIGSTOP), so what it sees is what the
    killed one leaves behind; a look that finds nothing to kill lets them all run again
    for a millisecond. ``look`` must not ask the replicas anything (they are frozen).
    Fails if the work finished before a kill could land.
    """
    deadline = time.monotonic() + timeout_s
    last: JobProgress | None = None
    while True:
        alive = [r for r in replicas if r.process.poll() is None]
        for r in alive:
            r.process.send_signal(signal.SIGSTOP)
        try:
            now, worker = look()
            last = now or last
            if now is not None and now.finished:
                raise AssertionError(f"{what} finished before a kill could land: {now.detail}")
            if now is not None and now.started and worker in alive:
                assert worker is not None
                worker.process.send_signal(signal.SIGKILL)
                worker.process.wait()
                return now, worker
        finally:
            for r in alive:
                if r.process.poll() is None:
                    r.process.send_signal(signal.SIGCONT)
        if time.monotonic() > deadline:
            detail = last.detail if last is not None else "never seen"
            raise AssertionError(f"{what} was not caught at work in {timeout_s} s: {detail}")
        time.sleep(0.001)


def point(agents: list[SimAgent], client: httpx.Client, url: str) -> None:
    """The agents sync through ``client`` with the server at ``url`` from now on."""
    client.base_url = httpx.URL(url + "/api/v1")
    for a in agents:
        a.client = client


def syncing_through(stack: contextlib.ExitStack, agents: list[SimAgent], url: str) -> Agents:
    """The agents syncing in the background with the server (or balancer) at ``url``, on
    a client of their own, tolerating a server that is down for a moment; both closed
    with ``stack``."""
    client = httpx.Client(timeout=10)
    stack.callback(client.close)
    client.headers["Authorization"] = agents[0].client.headers["Authorization"]
    point(agents, client, url)
    background = Agents(agents, tolerate_down=True).start()
    stack.callback(background.stop)
    return background


def finished(c: httpx.Client, job_id: int) -> Callable[[], Any]:
    def done() -> Any:
        r = c.get(f"/patchjobs/{job_id}")
        if r.status_code in (502, 503, 504):
            # The balancer between two health checks of the one replica left (a takeover
            # under way): asked again, as the API client resends a safe request.
            return None
        got = ok(r)
        return got if got["status"] >= 7 else None

    return done


def assert_exactly_once(c: httpx.Client, job_id: int, fleet: str, old_profile: str) -> None:
    """Every action of the job applied once: one action event per key, each old instance
    stopped once, one new instance per start."""
    acts = actions(c, job_id)
    assert acts and all(a["applied_at"] is not None for a in acts)
    applied = Counter(e["data"]["key"] for e in events(c, job_id) if e["kind"] == "action")
    assert set(applied.values()) == {1}
    assert len(applied) == sum(1 for a in acts if a["action"]["type"] != "Finish")
    stops = Counter(
        a["action"]["instance_id"] for a in acts if a["action"]["type"] == "StopInstance"
    )
    assert set(stops.values()) == {1}
    everything = ok(c.get(f"/fleets/{fleet}/instances", params={"all": "true"}))
    starts = {a["key"] for a in acts if a["action"]["type"] == "StartInstance"}
    launched = Counter(i["launch_key"] for i in everything if i.get("launch_key") in starts)
    assert set(launched) == starts and set(launched.values()) == {1}
    assert {i["id"] for i in everything if i["profile"] == old_profile} >= set(stops)


def up_behind(balancer: str) -> set[str]:
    """The replicas the balancer sends to, by the names their /readyz gives."""
    names = set()
    for _ in range(12):
        try:
            r = httpx.get(balancer + "/readyz", timeout=5)
        except httpx.TransportError:
            continue  # the balancer is not listening yet
        if r.status_code == 200:
            names.add(r.json()["replica"]["name"])
    return names


@contextlib.contextmanager
def balanced_replicas(
    pg_url: str, tmp_path: Path, env: dict[str, str]
) -> Iterator[tuple[str, list[Server]]]:
    """Three replicas on one database and data directory (the first leads), and HAProxy in
    front with the repository's ``deploy/haproxy.cfg``: the balancer's URL and them."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(haproxy, os.X_OK):
        unavailable("haproxy", "HAProxy is not installed (make haproxy installs Debian's)")
    replicas: list[Server] = []
    proxy: subprocess.Popen[bytes] | None = None
    try:
        replicas.append(start_server(tmp_path, pg_url, env=env))
        wait_for(lambda: leads(replicas[0]), 30, "the first replica to lead")
        replicas += [start_server(tmp_path, pg_url, env=env) for _ in range(2)]
        port = free_port()
        proxy_env = {
            **os.environ,
            "CHANGEOVER_LISTEN": f"127.0.0.1:{port}",
            **{
                f"CHANGEOVER_REPLICA_{n}": srv.url.removeprefix("http://")
                for n, srv in enumerate(replicas, 1)
            },
        }
        with open(tmp_path / "haproxy.log", "ab") as log:
            proxy = subprocess.Popen(
                [haproxy, "-db", "-f", str(CONFIG)], env=proxy_env, stdout=log, stderr=log
            )
        balancer = f"http://127.0.0.1:{port}"
        names = {role(srv)["name"] for srv in replicas}

        def all_three() -> bool:
            if proxy is not None and proxy.poll() is not None:
                raise AssertionError(f"haproxy exited: {(tmp_path / 'haproxy.log').read_text()}")
            return up_behind(balancer) == names

        wait_for(all_three, 60, "the balancer to use all three")
        yield balancer, replicas
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=10)
        for srv in replicas:
            stop_server(srv)
