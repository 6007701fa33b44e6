"""The whole API under a schema-driven fuzzer (Schemathesis), on SQLite and PostgreSQL.

Schemathesis reads the server's own ``/openapi.json`` and sends every operation, with an
admin token, the inputs the schema allows and the ones it forbids: wrong types, missing
and extra fields, numbers past their bounds, hostile strings. It checks that nothing
answers 5xx, that every status is one the schema declares, and that every answer matches
its declared content type and schema: an error the one ``Error`` shape, a success its
operation's response model field by field (no field missing, none undeclared, each of
its type; ``tests/unit/control/test_response_schemas.py`` makes sure each has one). One
run per database, bounded by examples per operation (``FUZZ_EXAMPLES`` on PostgreSQL,
``SQLITE_SHARE`` of them on SQLite) so that it takes a few minutes on two cores.

Before the run the server is given one of everything, each named ``fz`` or numbered 1 (an
image with two versions, a branch and two news entries, the catalogue, a fleet whose fake
agent runs its instances, a session, a patch job, a switch), and the fuzzer draws path
parameters, and the names a body or query gives, from those half the time (Schemathesis
dictionaries): most operations then also answer with a real body, checked field by field
against its response model, not only with 404. (A fuzzed allocation almost never succeeds, with
optional fields filled at random; ``test_fleet_api`` checks real answers of both its
paths against ``AllocationOut``.)

The seed is fixed so that a failure reproduces; ``CHANGEOVER_FUZZ_SEED`` picks another
(``random`` for a new one each run), ``CHANGEOVER_FUZZ_EXAMPLES`` searches harder.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fleet_helpers import FakeAgent, ok, release
from tests_helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

FUZZ_EXAMPLES = int(os.environ.get("CHANGEOVER_FUZZ_EXAMPLES", "35"))
SQLITE_SHARE = 0.6
"""SQLite's run takes this share of the examples: what an input does to the handlers is
searched on both databases, most thoroughly on PostgreSQL (the replicas' database, whose
types and constraints are the stricter); ``make test`` stays well under 15 minutes."""
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]
SPARED = ["revoke_token_api_v1_tokens__token_id__delete"]
"""Revoking token 1, the admin token the fuzzer itself uses, would end the run: every later
call would be a 401. (Its input is bounded like every other id; ``test_api_edge``.)"""


def _seed() -> str:
    seed = os.environ.get("CHANGEOVER_FUZZ_SEED", "20260118")
    return str(random.randrange(2**32)) if seed == "random" else seed


def _examples(server: Any) -> int:
    if server.database_url is None:  # SQLite
        return max(1, round(FUZZ_EXAMPLES * SQLITE_SHARE))
    return FUZZ_EXAMPLES


def test_no_operation_answers_5xx_or_off_its_schema(server: Any, tmp_path: Path) -> None:
    seed = _seed()
    config = tmp_path / "schemathesis.toml"
    config.write_text(_dictionaries(_seed_data(server)))
    cmd = [
        str(Path(sys.executable).parent / "st"),
        "--config-file",
        str(config),
        "run",
        f"{server.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {server.admin_token}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "coverage,fuzzing",
        "--max-examples",
        str(_examples(server)),
        "--seed",
        seed,
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--no-color",
        *(arg for op in SPARED for arg in ("--exclude-operation-id", op)),
    ]
    started = time.monotonic()
    done = subprocess.run(
        cmd, capture_output=True, text=True, cwd=tmp_path, timeout=1100, check=False
    )
    took = time.monotonic() - started
    print(f"schemathesis (seed {seed}) on {server.database_url or 'sqlite'}: {took:.0f} s")
    print(done.stdout[-4000:])
    assert done.returncode == 0, (
        f"schemathesis found failures (seed {seed}); its report:\n{done.stdout[-20000:]}"
        f"\n{done.stderr[-2000:]}\nserver log tail:\n{_server_errors(server)}"
    )
    assert "generated" in done.stdout  # it really ran
    # A schema Schemathesis cannot read in full is a schema a generated client cannot either.
    assert "Unresolvable references" not in done.stdout, done.stdout[-6000:]


def _server_errors(server: Any) -> str:
    lines = server.log.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if "Error" in line or "Traceback" in line)[-5000:]


def _seed_data(server: Any) -> dict[str, list[Any]]:
    """One of everything the API names, so that an operation can answer with a body; the
    values the fuzzer may draw for each path parameter."""
    c = server.client()
    ok(c.post("/images", json={"name": "fz"}), 201)
    v1 = release(c, "fz", {"bin/game": b"fz v1", "data": b"d"}, "1.0")
    release(c, "fz", {"bin/game": b"fz v2", "data": b"d"}, "2.0")
    ok(c.put("/images/fz/branches/live", json={"version": "1"}))
    ok(c.post("/applications", json={"name": "fz", "type": "game"}), 201)
    ok(c.post("/environments", json={"name": "fz"}), 201)
    ok(c.post("/regions", json={"name": "fz"}), 201)
    spec = {"application": "fz", "image": "fz", "command": ["game", "--port", "{port}"]}
    ok(c.post("/profiles", json={"name": "fz", "version": "1", **spec}), 201)
    ok(c.post("/profiles", json={"name": "fz2", "version": "2", "capacity": 50, **spec}), 201)
    fleet = {"name": "fz", "application": "fz", "environment": "fz", "profile": "fz"}
    ok(c.post("/fleets", json={**fleet, "hosts": ["fz"], "instances_per_host": 2}), 201)
    agent = FakeAgent(server.client(server.token("agent")), "fz", "fz")
    agent.register()
    agent.sync(2)  # the instances are created, then ready
    session = ok(c.post("/allocations", json={"fleet": "fz", "players": ["ann"]}), 201)
    switch = ok(c.post("/fleets/fz/switch", json={"profile": "fz2", "drain_s": 1}), 201)

    def switched() -> bool:  # driven by the agent: the new instances run, the old ones stop
        agent.sync()
        return ok(c.get(f"/switches/{switch['id']}"))["status"] in (5, 6)

    wait_for(switched, 60, "the switch to end")
    agent.sync(2)  # then every instance of the new profile is ready
    job = {
        "name": "fz",
        "environment": "fz",
        "application": "fz",
        "method": "rolling",
        "builds": [{"old": "fz2", "new": "fz"}],
        "fleets": ["fz"],
    }
    ok(c.post("/patchjobs", json=job), 201)
    news = {"title": "fz 1.0 released", "link": "https://fz.test/1.0"}
    ok(c.post("/images/fz/news/live", json=news), 201)
    ok(c.post("/images/fz/news/live", json={"title": "second"}), 201)
    ok(c.put("/images/fz/news/live/auto", json={"enabled": True}))
    return {
        "name": ["fz"],
        "ref": ["1", "2", "latest", "live"],
        "branch": ["live"],
        "session_id": [session["session_id"]],
        "sha256": [hashlib.sha256(b"fz v1").hexdigest()],
        "rel": [
            f"manifests/{v1['manifest_id']}.json",
            "metadata/timestamp.json",
            "news/fz/live.xml",
        ],
        "id": [1, 2],
    }


ID_PARAMETERS = [
    "update_id",
    "diff_id",
    "version_id",
    "instance_id",
    "switch_id",
    "job_id",
    "host_id",
    "entry_id",
]

NAMED_IN_BODIES = ["fleet", "profile", "application", "environment", "image"]


def _dictionaries(values: dict[str, list[Any]]) -> str:
    """A Schemathesis configuration: each path parameter is one of ``values`` half the
    time, anything its schema allows (or forbids) the other half."""
    lines = [f"[dictionaries.{k}]\nvalues = {json.dumps(v)}\n" for k, v in values.items()]
    lines.append("[parameters]")
    bound = {**dict.fromkeys(ID_PARAMETERS, "id"), **{k: k for k in values if k != "id"}}
    keys = {f"path.{param}": dictionary for param, dictionary in bound.items()}
    # What a body or a query names: the fleet to allocate on, the profile to switch to, …
    keys |= {f"body.{field}": "name" for field in NAMED_IN_BODIES} | {"query.fleet": "name"}
    for key, dictionary in keys.items():
        lines.append(f'"{key}" = {{ dictionary = "{dictionary}", probability = 0.5 }}')
    # A job's event stream stays open while the job runs: its first event is enough.
    lines.append('\n[[operations]]\ninclude-path = "/api/v1/patchjobs/{job_id}/stream"')
    lines.append("max-stream-events = 1")
    return "\n".join(lines) + "\n"
