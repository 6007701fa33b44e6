"""The OpenAPI schema with the error answers each operation really gives.

FastAPI documents an operation's success and a 422 of its own shape; our errors all have
one shape (``http_errors``) and come from a few causes, each visible in the route itself:

    the route reads the Authorization header      401 (no or bad token), 403 (its scope)
    it takes any input (path, query, body)        400 (the service's rules), 404 (a named
                                                  thing that does not exist), 422 (shape,
                                                  type and bounds)
    it takes a body                               413 (over the body limit)
    it changes something (POST, PUT, PATCH, …)    409 (the current state forbids it)
    it reads or writes the database               503 (unreachable for a moment: retry)

plus what a route declares itself (``responses=``: 503 for allocations, for ``/readyz``).
A generated client and a schema-driven fuzzer can then rely on every status it meets.

Success answers are the routes' own response models (``http_output``); ``undocumented``
finds an operation whose success says nothing of its body.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "description": "Every error: a code to branch on, a message to show, and its facts.",
    "properties": {
        "error": {"type": "string", "description": "e.g. invalid_input, not_found"},
        "message": {"type": "string", "description": "what happened and what to do"},
    },
    "required": ["error", "message"],
    "additionalProperties": True,
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
DESCRIPTIONS = {
    400: "The input breaks a rule (the message names the field)",
    401: "No access token, or a malformed, unknown, revoked or expired one",
    403: "The token's scope does not allow this",
    404: "A thing the request names does not exist",
    409: "The current state forbids this",
    413: "The request body is over the limit",
    422: "The request's shape, types or bounds are wrong",
    503: "Overloaded, stopping, or the database unreachable for a moment: retry later",
}
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def _reads_token(dep: Dependant) -> bool:
    if any(p.alias.lower() == "authorization" for p in dep.header_params):
        return True
    return any(_reads_token(sub) for sub in dep.dependencies)


def _takes_input(dep: Dependant) -> bool:
    if dep.path_params or dep.query_params or dep.body_params:
        return True
    return any(_takes_input(sub) for sub in dep.dependencies)


def error_statuses(route: APIRoute, method: str) -> set[int]:
    """The error statuses ``route`` answers to ``method`` (see the module docstring)."""
    # Every operation of the API reads the database (the token, if nothing else).
    statuses: set[int] = {503}
    if _reads_token(route.dependant):
        statuses |= {401, 403}
    if _takes_input(route.dependant) or route.body_field is not None:
        statuses |= {400, 404, 422}
    if route.body_field is not None or method in WRITES:
        statuses |= {400, 413, 422}
    if method in WRITES:
        statuses.add(409)
    return statuses


def _operations(routes: Iterable[APIRoute]) -> Iterator[tuple[str, str, APIRoute]]:
    for route in routes:
        if route.include_in_schema:
            for method in route.methods or ():
                yield route.path_format, method.lower(), route


def document_errors(schema: dict[str, Any], routes: Iterable[APIRoute]) -> dict[str, Any]:
    """``schema`` with each operation's error answers, all of the one ``Error`` shape."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    for path, method, route in _operations(routes):
        operation = schema.get("paths", {}).get(path, {}).get(method)
        if operation is None:
            continue
        responses = operation.setdefault("responses", {})
        derived = error_statuses(route, method.upper())
        if "422" in responses and 422 not in derived:
            del responses["422"]  # FastAPI's, for a header nothing can fail (Authorization)
        declared = {int(code) for code in responses if str(code).isdigit()}
        for status in sorted(derived | declared):
            entry = responses.setdefault(str(status), {})
            own = entry.get("content", {}).get("application/json", {}).get("schema")
            if status < 400 or (status not in derived and own):
                continue  # a success, or an error the route documents itself
            entry["description"] = DESCRIPTIONS.get(status, entry.get("description", "Error"))
            entry["content"] = {"application/json": {"schema": ERROR_REF}}
        operation["responses"] = dict(sorted(responses.items()))
    # FastAPI's own 422 shape is answered by nothing now.
    if '"#/components/schemas/HTTPValidationError"' not in json.dumps(schema["paths"]):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
    return schema


def _named_fields(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    """Whether ``schema`` (an object, or a list of them) names its fields."""
    for _ in range(10):  # through $refs and list items; nothing here nests deeper
        if "$ref" in schema:
            schema = components.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
        elif schema.get("type") == "array" and isinstance(schema.get("items"), dict):
            schema = schema["items"]
        else:
            break
    return bool(schema.get("properties"))


def undocumented(schema: dict[str, Any]) -> list[str]:
    """The operations of ``schema`` whose success answer is not described: no success at
    all, one with no content, or JSON content whose schema does not name its fields (a
    ``dict[str, Any]``: a client learns nothing from it)."""
    components = schema.get("components", {}).get("schemas", {})
    problems: list[str] = []
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            successes = {
                code: answer
                for code, answer in operation.get("responses", {}).items()
                if str(code).startswith("2")
            }
            if not successes:
                problems.append(f"{where}: no success answer")
            for code, answer in successes.items():
                content = answer.get("content") or {}
                if not content and code != "204":
                    problems.append(f"{where} {code}: no content type")
                json_body = content.get("application/json")
                if json_body is not None and not _named_fields(
                    json_body.get("schema", {}), components
                ):
                    problems.append(f"{where} {code}: a JSON body with no fields described")
    return problems
