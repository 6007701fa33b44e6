"""The dashboard's reads at fleet scale: how long the aggregate endpoints take at 10,000
instances, on SQLite and PostgreSQL.

A real ``changeover server`` per database, a fleet over 20 registered hosts, and
``--instances`` instance rows written straight into its database (running that many
through the agent protocol would measure the agents, not the reads). Then each read goes
through HTTP ``--repeat`` times: the fleet summary, the last page of the instance list,
a filtered page, and ``/metrics``. Reported: the median and the slowest of the repeats.

These figures were once one-shot limits inside tests/integration/control/
test_dashboard_scale.py (3 s, 2 s, 3 s); that test now checks only what the reads return.

Run ``python bench/dashboard.py --help``; ``make bench`` runs it with its defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from allocation import IMAGE, PG_BASE, database, release_build
from common import (
    BENCHMARKS_MD,
    BenchError,
    clean_up_on_signals,
    log,
    machine_info,
    markdown_table,
    median,
    running_server,
    source_revision,
    write_section,
)

SECTION = "dashboard"
QUICK_ARGS = ["--instances", "200", "--repeat", "2", "--databases", "sqlite"]
FLEET = "big-fleet"
REGIONS = ("eu", "us", "ap", "sa")
HOSTS = 20
STATES = [
    ("running", "ready"),
    ("running", "starting"),
    ("draining", "ready"),
    ("running", "failed"),
]
READS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "fleet summary": ("/api/v1", f"/fleets/{FLEET}/summary", {}),
    "last page of 100 instances": ("/api/v1", f"/fleets/{FLEET}/instance-page", {"limit": 100}),
    "failed instances of a region": (
        "/api/v1",
        f"/fleets/{FLEET}/instance-page",
        {"state": "failed", "region": "big-sa"},
    ),
    "/metrics": ("", "/metrics", {}),
}


@dataclass(frozen=True)
class Row:
    database: str
    read: str
    times: list[float]


def make_fleet(c: httpx.Client) -> None:
    """Catalogue, two profiles of the image's version, hosts and the fleet, over HTTP."""

    def post(path: str, body: dict[str, Any]) -> Any:
        r = c.post(path, json=body)
        if r.status_code != 201:
            raise BenchError(f"POST {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    post("/applications", {"name": "big-game", "type": "game"})
    post("/environments", {"name": "big-prod"})
    for r in REGIONS:
        post("/regions", {"name": f"big-{r}"})
    for name in ("big-v1", "big-v2"):
        post(
            "/profiles",
            {
                "name": name,
                "application": "big-game",
                "image": IMAGE,
                "version": "latest",
                "command": ["game", "--port", "{port}"],
                "capacity": 8,
            },
        )
    token = post("/tokens", {"scope": "agent", "name": "bench-agents"})["token"]
    hosts = [f"big-h{i}" for i in range(HOSTS)]
    with httpx.Client(
        base_url=str(c.base_url), headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as agent:
        for i, name in enumerate(hosts):
            body = {"name": name, "region": f"big-{REGIONS[i % 4]}", "slots": 10}
            r = agent.post("/agents/register", json={**body, "agent_uid": f"uid-{name}"})
            if r.status_code not in (200, 201):
                raise BenchError(f"register {name}: {r.status_code} {r.text[:500]}")
    post(
        "/fleets",
        {
            "name": FLEET,
            "application": "big-game",
            "environment": "big-prod",
            "hosts": hosts,
            "instances_per_host": 1,
        },
    )


def write_instances(db_url: str, n: int) -> None:
    from changeover.control.db import Database
    from changeover.control.fleet.models import Fleet, Host, Instance, Profile

    db = Database(db_url)
    try:
        with db.write() as s:
            fleet = s.query(Fleet).filter_by(name=FLEET).one()
            profiles = [s.query(Profile).filter_by(name=p).one() for p in ("big-v1", "big-v2")]
            hosts = s.query(Host).filter(Host.name.like("big-h%")).all()
            t = time.time()
            s.add_all(
                Instance(
                    fleet_id=fleet.id,
                    profile_id=profiles[i % 3 == 0].id,
                    host_id=hosts[i % len(hosts)].id,
                    capacity=8,
                    players=i % 5,
                    desired=STATES[i % 4][0],
                    state=STATES[i % 4][1],
                    port=20000 + i,
                    created_at=t,
                    updated_at=t,
                )
                for i in range(n)
            )
    finally:
        db.dispose()


def one_database(kind: str, args: argparse.Namespace) -> list[Row]:
    with contextlib.ExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="co-bench-dash-")))
        server_url, db_url = stack.enter_context(database(kind, data / "server", args.pg_url))
        env = {"CHANGEOVER_DATABASE_URL": server_url} if server_url else {}
        srv = stack.enter_context(running_server(data / "server", env=env))
        release_build(srv.env, data)
        headers = {"Authorization": f"Bearer {srv.token}"}
        c = stack.enter_context(httpx.Client(base_url=srv.url, headers=headers, timeout=120))
        api = stack.enter_context(
            httpx.Client(base_url=srv.url + "/api/v1", headers=headers, timeout=120)
        )
        make_fleet(api)
        write_instances(db_url, args.instances)
        rows = []
        for read, (prefix, path, fixed) in READS.items():
            params = {**fixed, "offset": max(0, args.instances - 50)} if "limit" in fixed else fixed
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                r = c.get(prefix + path, params=params)
                times.append(time.perf_counter() - started)
                if r.status_code != 200:
                    raise BenchError(f"GET {path}: {r.status_code} {r.text[:500]}")
            log(f"{kind} {read}: median {median(times):.3f} s")
            rows.append(Row(kind, read, times))
        return rows


def report_md(rows: Sequence[Row], args: argparse.Namespace, invoked_as: str) -> str:
    m = machine_info()
    table = markdown_table(
        ["database", "read", "median s", "slowest s"],
        [[r.database, r.read, f"{median(r.times):.3f}", f"{max(r.times):.3f}"] for r in rows],
        "llrr",
    )
    return (
        f"- **Command:** `{invoked_as}`; source {source_revision()}; {m['date']}.\n"
        f"- **Machine:** {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}.\n"
        f"- **Setup:** {args.instances:,} instances of one fleet over {HOSTS} hosts in"
        f" {len(REGIONS)} regions, written straight into the database; each read"
        f" {args.repeat} times over HTTP on loopback, a fresh server per database.\n\n"
        f"{table}\n"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--instances", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=5, help="timed requests per read")
    p.add_argument("--databases", default="sqlite,postgres", help="sqlite and/or postgres")
    p.add_argument("--pg-url", default=PG_BASE, help="PostgreSQL database for the schemas")
    p.add_argument("--out", type=Path, default=BENCHMARKS_MD, help="the file to update")
    args = p.parse_args(argv)
    args.database_list = [d.strip() for d in args.databases.split(",") if d.strip()]
    if not args.database_list or not set(args.database_list) <= {"sqlite", "postgres"}:
        p.error("--databases takes sqlite and/or postgres")
    if args.instances < 1 or args.repeat < 1:
        p.error("--instances and --repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None, *, invoked_as: str | None = None) -> int:
    args = parse_args(argv)
    invoked_as = invoked_as or "python bench/dashboard.py " + " ".join(argv or [])
    rows: list[Row] = []
    for kind in args.database_list:
        rows += one_database(kind, args)
    body = report_md(rows, args, invoked_as.strip())
    write_section(
        args.out, SECTION, "### Dashboard reads at scale (`bench/dashboard.py`)\n\n" + body
    )
    log(f"wrote section {SECTION} of {args.out}")
    return 0


if __name__ == "__main__":
    clean_up_on_signals()
    sys.exit(main(sys.argv[1:]))
