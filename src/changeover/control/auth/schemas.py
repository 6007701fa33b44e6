"""The answers of the token endpoints (``views``)."""

from __future__ import annotations

from changeover.control.http_output import Out


class WhoAmI(Out):
    token_id: int
    name: str
    scope: str


class TokenOut(Out):
    id: int
    name: str
    scope: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None


class TokenCreated(TokenOut):
    token: str
    """The secret, shown this once."""
