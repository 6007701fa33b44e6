"""A small fleet written straight into the database: for tests of the control plane's
services that need one without going through the API; and ``statements``, which records
the SQL those services send."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event, insert

from changeover.control.builds.models import Image, Version
from changeover.control.db import Database, now
from changeover.control.fleet.allocate_db import AllocationRequest
from changeover.control.fleet.models import (
    Application,
    Environment,
    Fleet,
    FleetHost,
    Host,
    Instance,
    Profile,
    Region,
)

NUMBERS = (3, 7, 12)
"""The versions' numbers: unlike their ids, so a mix-up of the two shows."""


def world(db: Database, hosts: int = 1, regions: int = 1) -> dict[str, Any]:
    """Fleet ``f`` on profile p3 (p7 and p12 beside it), ``hosts`` live hosts, no instances."""
    t = now()
    with db.write() as s:
        env = Environment(name="prod", created_at=t)
        app = Application(name="game", type="game", created_at=t)
        region_rows = [Region(name=f"r{n}", created_at=t) for n in range(regions)]
        s.add_all([env, app, *region_rows])
        s.flush()
        # Images and profiles as hosts below: the columns every revision since 0002 knows.
        image_id = s.execute(
            insert(Image.__table__)
            .values(name="img", description="", created_at=t)
            .returning(Image.__table__.c.id)
        ).scalar_one()
        versions = [
            Version(
                image_id=image_id,
                number=n,
                manifest_id=f"{n}".rjust(64, "0"),
                file_count=1,
                total_bytes=1,
                status=5,
                created_at=t,
                updated_at=t,
                created_by="t",
            )
            for n in NUMBERS
        ]
        s.add_all(versions)
        s.flush()
        profile_ids = [
            s.scalars(
                insert(Profile.__table__)
                .values(
                    name=f"p{v.number}",
                    application_id=app.id,
                    version_id=v.id,
                    capacity=4,
                    created_at=t,
                    created_by="t",
                    spec=json.dumps({"command": ["game"], "capacity": 4}),
                )
                .returning(Profile.__table__.c.id)
            ).one()
            for v in versions
        ]
        fleet = Fleet(
            name="f",
            application_id=app.id,
            environment_id=env.id,
            active_profile_id=profile_ids[0],
            instances_per_host=1,
            created_at=t,
            updated_at=t,
        )
        s.add(fleet)
        s.flush()
        names = [f"h{n}" for n in range(hosts)]
        # The columns every migration since 0002 has (tests of old migrations use this).
        host_ids = [
            s.scalars(
                insert(Host.__table__)
                .values(
                    name=name,
                    region_id=region_rows[n % regions].id,
                    address=f"10.0.0.{n + 1}",
                    slots=10,
                    agent_uid="u" * 16,
                    registered_at=t,
                    last_seen_at=t + 3600,
                    agent_version="",
                    staged="[]",
                )
                .returning(Host.__table__.c.id)
            ).one()
            for n, name in enumerate(names)
        ]
        s.add_all(FleetHost(fleet_id=fleet.id, host_name=name) for name in names)
        return {
            "app": app.id,
            "fleet": fleet.id,
            "profiles": {v.number: p for v, p in zip(versions, profile_ids, strict=True)},
            "versions": {v.number: v.id for v in versions},
            "hosts": host_ids,
        }


def ready_instance(w: dict[str, Any], number: int = NUMBERS[0], **kw: Any) -> Instance:
    """An instance of ``w``'s fleet on version ``number``'s profile, ready and running on
    the first host, 4 places, none taken; ``kw`` changes any column."""
    t = now()
    fields: dict[str, Any] = {
        "fleet_id": w["fleet"],
        "profile_id": w["profiles"][number],
        "host_id": w["hosts"][0],
        "capacity": 4,
        "players": 0,
        "desired": "running",
        "state": "ready",
        "port": 7000,
        "created_at": t,
        "updated_at": t,
    }
    return Instance(**(fields | kw))


def party_request(n: int, size: int = 1) -> AllocationRequest:
    """A request of ``size`` new players (``p<n>-0``, ...) for fleet ``f``, no preferences."""
    return AllocationRequest(
        fleet="f",
        profile=None,
        regions=(),
        client_version=None,
        players=tuple(f"p{n}-{k}" for k in range(size)),
    )


@contextlib.contextmanager
def statements(db: Database, containing: str) -> Iterator[list[str]]:
    """The statements sent to ``db`` inside the block that contain ``containing``."""
    found: list[str] = []

    def record(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if containing in statement:
            found.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield found
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
