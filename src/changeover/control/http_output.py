"""What the API answers, typed: the base of every response model.

Each sub-package describes its answers beside its views (``schemas``) and declares them on
its routes (``response_model=``), so that the OpenAPI schema says what a success carries
and a generated client or a schema-driven fuzzer can rely on it.

A response model filters what it does not list. Here an unlisted key is refused instead
(``extra="forbid"``): a view that grows a field its model lacks answers 500 in the tests
at once, rather than the CLI or the dashboard silently losing that field.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Out(BaseModel):
    """A response body (or part of one): exactly these fields."""

    model_config = ConfigDict(extra="forbid")


__all__ = ["Out"]
