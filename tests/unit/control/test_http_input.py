"""What the API accepts at its edge (control.http_input), without a server: the strict JSON
decoder, and the check that refuses an application with an unbounded number input."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Query
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from changeover.control import openapi
from changeover.control.auth.views import router as auth_router
from changeover.control.builds.views import router as builds_router
from changeover.control.content_views import router as content_router
from changeover.control.fleet.views import router as fleet_router
from changeover.control.http_input import (
    INT64_MAX,
    INT64_MIN,
    EdgeRoute,
    Id,
    foreign_routes,
    loads_json,
    unbounded_inputs,
)
from changeover.control.observability import router as observability_router
from changeover.control.patchjobs.views import router as patchjobs_router
from changeover.web.stream import router as stream_router

ROUTERS = [
    auth_router,
    builds_router,
    content_router,
    fleet_router,
    observability_router,
    patchjobs_router,
    stream_router,
]


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "b": [-2.5, "x", null, true], "c": {"d": "\\u00e9"}}',
        f"[{INT64_MAX}, {INT64_MIN}, 1e308, -1e-300]",
        '"\\ud83d\\ude00"',  # a surrogate pair is one character, fine
    ],
)
def test_ordinary_json_decodes_as_json_does(text: str) -> None:
    assert loads_json(text) == json.loads(text)
    assert loads_json(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"{INT64_MAX + 1}", "out of range"),
        (f"{INT64_MIN - 1}", "out of range"),
        ('{"deep": [{"x": 99999999999999999999999}]}', "out of range"),
        ("NaN", "not a JSON number"),
        ('{"x": Infinity}', "not a JSON number"),
        ("[-Infinity]", "not a JSON number"),
        ("1e999", "out of range"),
        ('{"name": "a\\ud800"}', "not valid Unicode"),
        ('{"\\udc00": 1}', "not valid Unicode"),
        ("{not json", "Expecting property name"),
    ],
)
def test_values_no_database_stores_are_refused(text: str, reason: str) -> None:
    with pytest.raises(json.JSONDecodeError, match=reason):
        loads_json(text)


def _routes(router: APIRouter) -> list[APIRoute]:
    return [r for r in router.routes if isinstance(r, APIRoute)]


def test_every_route_of_the_api_is_bounded_and_an_edge_route() -> None:
    routes = [r for router in ROUTERS for r in _routes(router)]
    assert len(routes) > 50
    assert unbounded_inputs(routes) == []
    assert foreign_routes(routes) == []


class Inner(BaseModel):
    count: int
    ok: Annotated[int, Field(ge=0, le=10)]


class Outer(BaseModel):
    items: list[Inner]
    ratio: float | None = None
    flag: bool = False
    knobs: dict[str, Any] = {}


def test_the_check_finds_each_unbounded_number() -> None:
    router = APIRouter(route_class=EdgeRoute)

    @router.post("/things/{thing_id}")
    def make(thing_id: int, body: Outer, page: int = Query(default=0, ge=0)) -> None: ...

    @router.get("/fine/{thing_id}")
    def fine(thing_id: Id, limit: Annotated[int, Query(ge=1, le=5)] = 1) -> None: ...

    @router.get("/wide")
    def wide(n: Annotated[int, Query(ge=0, le=2**64)] = 0) -> None: ...

    found = unbounded_inputs(_routes(router))
    assert found == [
        "POST /things/{thing_id} thing_id: int without a lower and an upper bound",
        "POST /things/{thing_id} page: int without a lower and an upper bound",
        "POST /things/{thing_id} body.items.count: int without a lower and an upper bound",
        "POST /things/{thing_id} body.ratio: float without a lower and an upper bound",
        f"GET /wide n: int bounds 0..{2**64} exceed 64 bits",
    ]
    plain = APIRouter()

    @plain.get("/plain")
    def plain_route() -> None: ...

    assert foreign_routes(_routes(plain)) == ["GET /plain"]


def test_error_statuses_follow_from_the_route() -> None:
    by_path = {(r.path, m): r for router in ROUTERS for r in _routes(router) for m in r.methods}
    allocate = by_path[("/api/v1/allocations", "POST")]
    assert openapi.error_statuses(allocate, "POST") == {400, 401, 403, 404, 409, 413, 422, 503}
    whoami = by_path[("/api/v1/whoami", "GET")]
    assert openapi.error_statuses(whoami, "GET") == {401, 403, 503}
    content = by_path[("/content/{rel:path}", "GET")]
    assert openapi.error_statuses(content, "GET") == {400, 404, 422, 503}
