"""The answers of the news endpoints (``views``)."""

from __future__ import annotations

from changeover.control.http_output import Out


class NewsEntryOut(Out):
    id: int
    image: str
    branch: str
    title: str
    body: str
    link: str | None
    created_at: float
    created_by: str
    version_id: int | None
    """The version whose release posted it; None for an entry an admin posted."""


class NewsAutoOut(Out):
    image: str
    branch: str
    enabled: bool
    """Each move of the branch posts "<label> released"."""


class NewsDeleted(Out):
    deleted: int
