"""What the HTTP API accepts: every number bounded, every JSON body decoded strictly.

Bad input must get a clear 4xx and reach nothing. Numbers are where it used to slip
through: an id of 2**63 passed validation (Python's ints have no limit) and overflowed in
the database driver, a plain-text 500. So, once for the whole API:

- The number types below (``Id``, ``Offset``, ``Int64``, ``Seconds`` …) carry their bounds
  into validation and into the OpenAPI schema, where clients and fuzzers read them.
- :func:`unbounded_inputs` walks every route's parameters and body models, and
  ``create_app`` refuses to start while any ``int`` or ``float`` input lacks a lower and
  an upper bound: a new endpoint cannot forget them.
- :class:`EdgeRoute` decodes every JSON body with :func:`loads_json`, which refuses
  integers outside 64 bits, non-finite numbers (``NaN``, ``Infinity``, ``1e999``) and
  text that is not Unicode (lone surrogates) wherever they are, free-form fields
  (``dict[str, Any]``) included.

A refused number is a 422 ``invalid_input`` like any other validation error.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Annotated, Any

import annotated_types
from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
"""The database's integers (SQLite INTEGER, PostgreSQL BIGINT) are signed 64-bit."""
MAX_SECONDS = 100 * 365 * 86400.0
"""A duration no caller means past a century; added to now it stays a valid date."""
MAX_TIMESTAMP = 253_402_300_799.0
"""9999-12-31T23:59:59Z, the last instant ``datetime`` can show."""
MAX_FLOAT = 1e15
"""A plain number (a fraction, a percentage, a count in a float) stays well inside this."""

Id = Annotated[int, Field(ge=1, le=INT64_MAX)]
"""A row id: ids start at 1."""
Offset = Annotated[int, Field(ge=0, le=INT64_MAX)]
"""A position or a cursor: rows to skip, the last event id seen."""
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
"""An integer the service checks further (and names the field it breaks)."""
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS)]
"""A duration in seconds."""
Timestamp = Annotated[float, Field(ge=0, le=MAX_TIMESTAMP)]
"""A Unix time in seconds."""
Number = Annotated[float, Field(ge=-MAX_FLOAT, le=MAX_FLOAT)]
"""A finite float the service checks further."""


# -- JSON bodies ---------------------------------------------------------------------------


class _Refused(json.JSONDecodeError):
    """A well-formed JSON document holding a value the API never accepts."""


def _parse_int(text: str) -> int:
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"integer {text[:40]} is out of range (64-bit signed)")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _parse_constant(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")


def _check_text(value: Any) -> None:
    """Refuse lone surrogates (``"\\ud800"``): valid JSON, but no database can store them."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("text that is not valid Unicode (a lone surrogate)") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def loads_json(body: bytes | str) -> Any:
    """``json.loads`` that refuses what the API never accepts (see the module docstring).

    Raises:
        json.JSONDecodeError: not JSON, or JSON holding such a value (its ``msg`` says which).
    """
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        value = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
        _check_text(value)
    except json.JSONDecodeError:
        raise
    except ValueError as e:
        raise _Refused(str(e), text[:200], 0) from None
    return value


class EdgeRequest(Request):
    """A request whose JSON body is decoded by :func:`loads_json`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = loads_json(await self.body())
            except UnicodeDecodeError as e:
                raise json.JSONDecodeError("the body is not UTF-8", "", e.start) from None
        return self._json


class EdgeRoute(APIRoute):
    """Every API route: its handler sees an :class:`EdgeRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def edge_handler(request: Request) -> Response:
            return await handler(EdgeRequest(request.scope, request.receive))

        return edge_handler


# -- the check over all routes -------------------------------------------------------------


def _bounds(metadata: list[Any]) -> tuple[Any, Any]:
    low = high = None
    for m in metadata:
        if isinstance(m, annotated_types.Ge | annotated_types.Gt):
            low = m.ge if isinstance(m, annotated_types.Ge) else m.gt
        elif isinstance(m, annotated_types.Le | annotated_types.Lt):
            high = m.le if isinstance(m, annotated_types.Le) else m.lt
        elif isinstance(m, annotated_types.Interval):
            low = m.ge if m.ge is not None else m.gt if m.gt is not None else low
            high = m.le if m.le is not None else m.lt if m.lt is not None else high
    return low, high


def _unbounded_type(tp: Any, metadata: list[Any], where: str, seen: set[type]) -> Iterator[str]:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *extra = typing.get_args(tp)
        more = [*metadata]
        for item in extra:
            more.extend(getattr(item, "metadata", [item]))
        yield from _unbounded_type(base, more, where, seen)
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            yield from _unbounded_type(arg, metadata, where, seen)
    elif origin is not None:  # list[X], dict[K, V], tuple[...]: bound what they hold
        for arg in typing.get_args(tp):
            if arg is not Ellipsis:
                yield from _unbounded_type(arg, [], where, seen)
    elif tp is bool:
        return
    elif tp in (int, float):
        low, high = _bounds(metadata)
        if low is None or high is None:
            yield f"{where}: {tp.__name__} without a lower and an upper bound"
        elif tp is int and (low < INT64_MIN or high > INT64_MAX):
            yield f"{where}: int bounds {low}..{high} exceed 64 bits"
    elif isinstance(tp, type) and issubclass(tp, BaseModel) and tp not in seen:
        seen.add(tp)
        for name, field in tp.model_fields.items():
            yield from _unbounded_type(
                field.annotation, list(field.metadata), f"{where}.{name}", seen
            )


def _dependant_params(dep: Dependant) -> Iterator[Any]:
    yield from dep.path_params
    yield from dep.query_params
    yield from dep.header_params
    yield from dep.cookie_params
    yield from dep.body_params
    for sub in dep.dependencies:
        yield from _dependant_params(sub)


def unbounded_inputs(routes: Iterable[APIRoute]) -> list[str]:
    """Every number a request can carry into ``routes`` with no lower or upper bound."""
    found: list[str] = []
    for route in routes:
        name = f"{','.join(sorted(route.methods or ()))} {route.path}"
        for param in _dependant_params(route.dependant):
            info = param.field_info
            found.extend(
                _unbounded_type(
                    info.annotation, list(info.metadata), f"{name} {param.alias}", set()
                )
            )
    return found


def foreign_routes(routes: Iterable[APIRoute]) -> list[str]:
    """Routes not made by :class:`EdgeRoute` (their JSON would be decoded laxly)."""
    return [
        f"{','.join(sorted(r.methods or ()))} {r.path}"
        for r in routes
        if not isinstance(r, EdgeRoute)
    ]
