"""The API's edge against a real server, on SQLite and PostgreSQL: numbers past 64 bits,
values no database stores, the framework's own errors and requests without a token all
get a clear 4xx in the one error shape, and nothing is stored."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests_helpers import build_manifest

pytestmark = pytest.mark.timeout(120)

HUGE = [2**63, 2**64, -(2**63) - 1, 10**30]
"""Integers no 64-bit column holds (the last one also past any float's exact range)."""


def is_error(r: httpx.Response, *statuses: int) -> dict[str, Any]:
    """The body of an error answer: one of ``statuses``, JSON, ``{"error", "message"}``."""
    assert r.status_code in statuses, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str), body
    assert isinstance(body.get("message"), str), body
    return body


def test_integers_past_64_bits_are_refused_everywhere(server: Any) -> None:
    c = server.client()
    c.post("/images", json={"name": "bounds"})
    for n in HUGE:
        # Path parameters: every kind of id.
        for path in (
            f"/updates/{n}",
            f"/diffs/{n}",
            f"/versions/{n}",
            f"/instances/{n}",
            f"/switches/{n}",
            f"/patchjobs/{n}",
            f"/patchjobs/{n}/events",
            f"/patchjobs/{n}/actions",
            f"/patchjobs/{n}/stream",
        ):
            is_error(c.get(path), 422)
        for path in (f"/updates/{n}/complete", f"/diffs/{n}/accept", f"/patchjobs/{n}/resume"):
            is_error(c.post(path), 422)
        is_error(c.delete(f"/tokens/{n}"), 422)
        is_error(c.delete(f"/images/bounds/news/live/{n}"), 422)
        is_error(c.post(f"/agents/{n}/sync", json={"agent_uid": "x"}), 422)
        # Query parameters.
        is_error(c.get("/patchjobs", params={"offset": n}), 422)
        is_error(c.get("/patchjobs", params={"status": n}), 422)
        is_error(c.get("/patchjobs/1/events", params={"after": n}), 422)
        is_error(c.get("/stats/players", params={"buckets": n}), 422)
        is_error(c.get("/images/bounds/news/live", params={"limit": n}), 422)
        # Bodies: a typed field, and free-form ones the models cannot bound themselves.
        is_error(c.post("/images/bounds/diffs", json={"update_id": n}), 422)
        manifest = build_manifest({"f": b"1"})
        manifest["files"][0]["size"] = n
        body = is_error(c.post("/images/bounds/updates", json={"manifest": manifest}), 422)
        assert "out of range" in body["message"]
        is_error(
            c.post(
                "/fleets",
                json={"name": "f", "application": "a", "environment": "e", "instances_per_host": n},
            ),
            422,
        )
        job = {
            "name": "j",
            "environment": "e",
            "application": "a",
            "method": "rolling",
            "builds": [{"old": "1", "new": "2"}],
            "fleets": ["f"],
            "rolling": {"batch": n},
        }
        is_error(c.post("/patchjobs", json=job), 422)
    # Nothing was stored by any of it.
    assert c.get("/images/bounds/versions").json() == []
    assert c.get("/patchjobs").json()["total"] == 0
    assert c.get("/fleets").json() == []
    assert c.get("/images/bounds/news/live").json() == []


def test_numbers_and_text_no_database_stores_are_refused(server: Any) -> None:
    c = server.client()
    raw = {"Content-Type": "application/json"}
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        body = b'{"name": "t", "scope": "viewer", "expires_in_s": ' + literal + b"}"
        is_error(c.post("/tokens", content=body, headers=raw), 422)
    for bad in (float("nan"), float("inf")):
        is_error(c.get("/stats/players", params={"window_s": str(bad)}), 422)
    # A lone surrogate: valid JSON, but no driver can encode it.
    body = is_error(c.post("/environments", content=b'{"name": "a\\ud800"}', headers=raw), 422)
    assert "Unicode" in body["message"]
    # A NUL character: SQLite keeps it, PostgreSQL refuses it; either way no 500.
    r = c.post("/environments", json={"name": "nul\x00name"})
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        is_error(r, 400, 422)
    r = c.post("/allocations", json={"players": ["p\x00"]})
    assert r.status_code < 500, r.text
    # Not UTF-8 at all.
    is_error(c.post("/environments", content=b'{"name": "\xff\xfe"}', headers=raw), 422)


def test_the_frameworks_own_errors_have_our_shape(server: Any) -> None:
    c = server.client()
    assert is_error(c.get("/no-such-thing"), 404)["error"] == "not_found"
    assert is_error(httpx.get(server.url + "/nowhere"), 404)["error"] == "not_found"
    r = c.delete("/images")
    assert is_error(r, 405)["error"] == "method_not_allowed"
    assert r.headers["allow"]
    raw = {"Content-Type": "application/json"}
    body = is_error(c.post("/images", content=b"{not json", headers=raw), 422)
    assert body["error"] == "invalid_input"
    assert "JSON" in body["message"]
    is_error(c.post("/images", json=[1, 2]), 422)
    is_error(c.post("/images", content=b"name=x", headers={"Content-Type": "text/plain"}), 422)
    is_error(c.get("/diffs/not-a-number"), 422)


def test_the_token_is_checked_before_the_body(server: Any) -> None:
    base = server.url + "/api/v1"
    raw = {"Content-Type": "application/json"}
    bodies = [
        b"{not json",
        b'{"name": ' + str(2**64).encode() + b"}",
        b'{"manifest": {"files": [' + b" " * (65 << 20) + b"]}}",  # over the body limit
    ]
    for headers in ({}, {"Authorization": "Bearer cho_1_" + "x" * 43}, {"Authorization": "x"}):
        for body in bodies:
            r = httpx.post(base + "/images/x/updates", content=body, headers={**raw, **headers})
            assert is_error(r, 401)["error"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        r = httpx.get(base + f"/diffs/{2**64}", headers=headers)
        is_error(r, 401)
        is_error(httpx.get(base + "/no-such-thing", headers=headers), 401)
    # A valid token of the wrong scope: 403 before the body's shape is looked at.
    viewer = server.client(server.token("viewer"))
    assert is_error(viewer.post("/images", json={"nonsense": True}), 403)["error"] == "forbidden"


def test_the_schema_declares_bounds_and_error_answers(server: Any) -> None:
    schema = httpx.get(server.url + "/openapi.json").json()
    assert "Error" in schema["components"]["schemas"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, item in schema["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            if path.startswith("/api/v1/"):
                assert {"401", "403"} <= set(responses), (method, path)
            inputs = [p for p in op.get("parameters", []) if p["in"] != "header"]
            if inputs or op.get("requestBody"):
                assert {"400", "404", "422"} <= set(responses), (method, path)
            if op.get("requestBody"):
                assert "413" in responses, (method, path)
            for code, answer in responses.items():
                if code.startswith(("4", "5")) and path != "/readyz":  # its 503 lists checks
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/Error", (method, path, code)
            for param in op.get("parameters", []):
                _assert_bounded(param["schema"], f"{method} {path} {param['name']}")
    # What the API takes is bounded; what it answers is described, not bounded.
    inputs = _referenced(
        schema,
        [
            op["requestBody"]
            for item in schema["paths"].values()
            for op in item.values()
            if "requestBody" in op
        ],
    )
    assert "JobCreate" in inputs and "AllocationCreate" in inputs
    for name in inputs:
        _assert_bounded(schema["components"]["schemas"][name], name)


def _referenced(schema: dict[str, Any], roots: list[Any]) -> set[str]:
    """The component schemas ``roots`` refer to, directly or through one another."""
    found: set[str] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in found:
                    found.add(name)
                    todo.append(schema["components"]["schemas"][name])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return found


def _assert_bounded(schema: dict[str, Any], where: str) -> None:
    """Every integer and number in ``schema`` has a minimum and a maximum."""
    if schema.get("type") in ("integer", "number"):
        assert "minimum" in schema or "exclusiveMinimum" in schema, where
        assert "maximum" in schema or "exclusiveMaximum" in schema, where
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for sub in schema.get(key, []):
            _assert_bounded(sub, where)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _assert_bounded(schema[key], where)
    for name, sub in (schema.get("properties") or {}).items():
        _assert_bounded(sub, f"{where}.{name}")
