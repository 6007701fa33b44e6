"""Helpers for fleet tests (imported as ``fleet_helpers``): releases, a fleet, a fake agent.

``FakeAgent`` speaks the agent protocol over real HTTP but runs nothing: it reports every
instance it is asked to run as ready on a made-up port (or in whatever state a test sets),
which is how the API tests exercise placement, allocation and switches without processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from changeover.control.fleet.schemas import HostDesired
from tests_helpers import CLI, push_files, wait_job


def release(
    c: httpx.Client,
    image: str,
    files: dict[str, bytes],
    label: str | None,
    executable: Collection[str] = (),
) -> Any:
    """Push, analyse and accept a build; returns the completed version."""
    upd = push_files(c, image, files, label, executable)
    assert wait_job(c, f"/updates/{upd['id']}")["status"] == 5
    d = c.post(f"/images/{image}/diffs", json={"update_id": upd["id"]})
    assert d.status_code == 201, d.text
    assert wait_job(c, f"/diffs/{d.json()['id']}")["status"] == 5
    v = c.post(f"/diffs/{d.json()['id']}/accept")
    assert v.status_code == 201, v.text
    return wait_job(c, f"/versions/{v.json()['id']}")


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    return r.json()


def desired_state(r: httpx.Response) -> Any:
    """A sync's answer, checked against the schema it documents (the server sends it
    unchecked, ``fleet.views.sync_agent``): a field the schema lacks fails the test."""
    answer = ok(r)
    HostDesired.model_validate(answer)
    return answer


def catalogue(c: httpx.Client, prefix: str, regions: tuple[str, ...] = ("eu",)) -> None:
    """An application ``<prefix>-game`` of type game, environment and regions."""
    ok(c.post("/applications", json={"name": f"{prefix}-game", "type": "game"}), 201)
    ok(c.post("/environments", json={"name": f"{prefix}-prod"}), 201)
    for r in regions:
        ok(c.post("/regions", json={"name": f"{prefix}-{r}"}), 201)


def profile(c: httpx.Client, name: str, app: str, image: str, version: str, **spec: Any) -> Any:
    body = {"name": name, "application": app, "image": image, "version": version}
    body.update({"command": ["game", "--port", "{port}"], **spec})
    return ok(c.post("/profiles", json=body), 201)


@dataclass
class FakeAgent:
    client: httpx.Client
    name: str
    region: str
    slots: int = 10
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    host_id: int | None = None
    states: dict[int, str] = field(default_factory=dict)
    """Per instance, the state to report instead of the default (ready)."""
    players: dict[int, list[str]] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)
    report_exits: bool = False
    """Report each stopped instance's process as exited with code 0 after its stop."""
    crashes: dict[str, str] = field(default_factory=dict)
    """Per profile, the agent's error of its instances' processes, which crash at once
    (reported as failed)."""

    def register(self) -> Any:
        out = ok(
            self.client.post(
                "/agents/register",
                json={
                    "name": self.name,
                    "region": self.region,
                    "slots": self.slots,
                    "agent_uid": self.uid,
                },
            )
        )
        self.host_id = out["id"]
        return out

    def observed(self) -> list[dict[str, Any]]:
        out = []
        for inst in self.last.get("instances", []):
            i = inst["id"]
            state = "stopped" if inst["desired"] == "stopped" else self.states.get(i, "ready")
            out.append(
                {
                    "id": i,
                    "state": state,
                    "port": 20000 + i,
                    "pid": 100 + i,
                    "sdk": {"ready": state == "ready", "players": self.players.get(i, [])},
                }
            )
            if self.report_exits and state == "stopped":
                out[-1]["exit"] = {"how": "exited", "code": 0, "reason": "stop", "at": 1.0}
            if inst.get("profile") in self.crashes and state != "stopped":
                out[-1].update(state="failed", error=self.crashes[inst["profile"]])
                out[-1]["exit"] = {"how": "crashed", "code": 1, "at": 2.0}
        return out

    def sync(self, times: int = 1) -> Any:
        """Sync ``times`` times (the first creates instances, the next reports them)."""
        for _ in range(times):
            self.last = desired_state(
                self.client.post(
                    f"/agents/{self.host_id}/sync",
                    json={"agent_uid": self.uid, "instances": self.observed()},
                )
            )
        return self.last

    def desired(self) -> dict[int, str]:
        return {i["id"]: i["desired"] for i in self.last["instances"]}


ARENA = Path(__file__).resolve().parents[1] / "examples" / "arena"


def arena_fleet(
    c: httpx.Client, hosts: Sequence[tuple[str, str]], per_host: int, capacity: int = 4
) -> None:
    """The sample game's two builds as profiles arena-v1 and arena-v2 (the game run by this
    Python), and the fleet ``arena`` of ``per_host`` v1 instances on each (host, region)."""
    ok(c.post("/images", json={"name": "arena"}), 201)
    release(c, "arena", arena_files("build-v1"), "v1")
    release(c, "arena", arena_files("build-v2"), "v2")
    ok(c.post("/applications", json={"name": "arena", "type": "game"}), 201)
    ok(c.post("/environments", json={"name": "production"}), 201)
    for region in dict.fromkeys(r for _, r in hosts):
        ok(c.post("/regions", json={"name": region}), 201)
    for v in ("v1", "v2"):
        profile = {
            "name": f"arena-{v}",
            "application": "arena",
            "image": "arena",
            "version": v,
            "command": [sys.executable, "arena_server.py"],
            "capacity": capacity,
            "stop_timeout_s": 10,
        }
        ok(c.post("/profiles", json=profile), 201)
    fleet = {
        "name": "arena",
        "application": "arena",
        "environment": "production",
        "hosts": [h for h, _ in hosts],
        "instances_per_host": per_host,
        "profile": "arena-v1",
    }
    ok(c.post("/fleets", json=fleet), 201)


def arena_files(build: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (ARENA / build).iterdir() if p.is_file()}


def free_port_range(n: int = 40) -> str:
    """A port range for one agent's instances, unlikely to clash with other tests; below
    the kernel's ephemeral ports (from 32768), which outgoing connections and servers'
    ``bind(0)`` take at any moment, between an agent's check and its game's bind."""
    base = random.randrange(20000, 32768 - n)
    return f"{base}-{base + n - 1}"


@dataclass
class AgentProc:
    """``changeover agent`` as a separate process, with its work directory and log."""

    server: Any
    token: str
    name: str
    region: str
    work: Path
    slots: int = 10
    ports: str = field(default_factory=free_port_range)
    extra: list[str] = field(default_factory=list)
    """More ``changeover agent`` options (``--address``, ``--keep-staged`` …)."""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProc:
        log = open(self.work.with_suffix(".log"), "ab")  # noqa: SIM115 (the child owns it)
        self.process = subprocess.Popen(
            [
                *CLI,
                "agent",
                "--server",
                self.server.url,
                "--token",
                self.token,
                "--name",
                self.name,
                "--region",
                self.region,
                "--slots",
                str(self.slots),
                "--work",
                str(self.work),
                "--ports",
                self.ports,
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("CHANGEOVER_")},
        )
        log.close()
        return self

    def log(self) -> str:
        return self.work.with_suffix(".log").read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the agent gets no chance to tidy up; its games keep running."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def instance_pids(self) -> dict[int, int]:
        out = {}
        for p in (self.work / "instances").glob("*.json"):
            rec = json.loads(p.read_text())
            if rec.get("pid"):
                out[rec["id"]] = rec["pid"]
        return out

    def cleanup(self) -> None:
        """Stop the agent, then kill every game it left (they outlive agents by design)."""
        self.stop()
        for pid in self.instance_pids().values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
