"""Helpers for tests of a patch job's client release (imported as ``client_release_helpers``):
a client image with two labelled versions, a server fleet of its own image, allocation with
a client version, where a branch points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from fleet_helpers import catalogue, ok, profile, release
from patchjob_helpers import SimAgent
from tests_helpers import Server


def client_image(c: httpx.Client, name: str) -> None:
    """Client image ``name``: version 1 labelled 1.4 (on branch production), 2 labelled 1.5."""
    ok(c.post("/images", json={"name": name}), 201)
    release(c, name, {"client.exe": b"1.4"}, "1.4")
    release(c, name, {"client.exe": b"1.5"}, "1.5")
    ok(c.put(f"/images/{name}/branches/production", json={"version": "1"}))


def server_fleet(
    server: Server, prefix: str, hosts: list[str], broken: str = ""
) -> tuple[httpx.Client, list[SimAgent]]:
    """Fleet ``<prefix>-fleet`` of image ``<prefix>-srv`` version 1 (profile ``<prefix>-v1``),
    version 2 ready as ``<prefix>-v2``; one instance per host, all ready."""
    c = server.client()
    ok(c.post("/images", json={"name": f"{prefix}-srv"}), 201)
    release(c, f"{prefix}-srv", {"bin/game": b"v1"}, None)
    release(c, f"{prefix}-srv", {"bin/game": b"v2"}, None)
    catalogue(c, prefix)
    profile(c, f"{prefix}-v1", f"{prefix}-game", f"{prefix}-srv", "1", capacity=4)
    profile(c, f"{prefix}-v2", f"{prefix}-game", f"{prefix}-srv", "2", capacity=4)
    ok(
        c.post(
            "/fleets",
            json={
                "name": f"{prefix}-fleet",
                "application": f"{prefix}-game",
                "environment": f"{prefix}-prod",
                "hosts": hosts,
                "instances_per_host": 1,
                "profile": f"{prefix}-v1",
            },
        ),
        201,
    )
    agent_client = server.client(server.token("agent"))
    agents: list[SimAgent] = [
        BrokenNewBuild(agent_client, h, f"{prefix}-eu", broken=broken) for h in hosts
    ]
    for a in agents:
        a.register()
        a.sync(2)
    return c, agents


def compat(c: httpx.Client, image: str, version: int) -> tuple[str | None, str | None]:
    got = ok(c.get(f"/images/{image}/versions/{version}/compat"))
    return got["client_min"], got["client_max"]


@dataclass
class BrokenNewBuild(SimAgent):
    """Reports every instance of profile ``broken`` failed."""

    broken: str = ""

    def observed(self) -> list[dict[str, Any]]:
        out = super().observed()
        profiles = {i["id"]: i["profile"] for i in self.last.get("instances", [])}
        for o in out:
            if profiles.get(o["id"]) == self.broken and o["state"] != "stopped":
                o["state"], o["sdk"]["ready"] = "failed", False
        return out


def branch_version(c: httpx.Client, image: str, branch: str = "production") -> int:
    rows = ok(c.get(f"/images/{image}/branches"))
    return int(next(b["version"] for b in rows if b["name"] == branch))


def allocate(c: httpx.Client, fleet: str, player: str, client: str, **extra: Any) -> Any:
    return c.post(
        "/allocations",
        json={"fleet": fleet, "players": [player], "client_version": client, **extra},
    )
