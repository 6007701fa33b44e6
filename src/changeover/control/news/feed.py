"""An image branch's news as an Atom feed (RFC 4287), built from plain values.

Everything a user wrote is a text node or an attribute value written by ElementTree,
which escapes ``<``, ``&``, quotes and the rest: an entry titled ``<script>…`` reads as
that text in any feed reader, never as markup (titles and bodies are ``type="text"``).
Characters XML 1.0 cannot carry at all (most control characters, lone surrogates) are
refused when an entry is posted (``services``) and dropped here again, so that the feed
is well-formed whatever the database holds.

The bytes depend only on the entries: the publisher compares them with the file it wrote
last and rewrites (and purges) only a feed that changed.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

ATOM = "http://www.w3.org/2005/Atom"
FEED_ENTRIES = 50
"""Entries a feed carries: the newest ones. Older ones stay listed by the API."""
NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""What XML 1.0 cannot hold, even escaped."""
_NAMESPACE = uuid.UUID("5d0c43b1-6a2f-4c55-9d8e-8f3e0b6b7a10")
"""Names this server's feed and entry ids (``urn:uuid:``): stable across rewrites."""


@dataclass(frozen=True)
class FeedEntry:
    id: int
    title: str
    body: str
    link: str | None
    created_at: float


def xml_text(value: str) -> str:
    """``value`` without the characters XML 1.0 cannot hold."""
    return NOT_XML.sub("", value)


def feed_path(image: str, branch: str) -> str:
    """Where the feed sits in the content tree (``/content/news/…``)."""
    return f"news/{image}/{branch}.xml"


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _id(*parts: object) -> str:
    return "urn:uuid:" + str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


def atom_feed(
    image: str, branch: str, entries: Sequence[FeedEntry], *, since: float, title: str = ""
) -> bytes:
    """The Atom document of a feed; ``entries`` newest first (only ``FEED_ENTRIES`` kept).

    ``since`` stands for the feed's ``updated`` time when it has no entries (Atom requires
    one), so that an empty feed's bytes do not change either.
    """
    kept = list(entries[:FEED_ENTRIES])
    ET.register_namespace("", ATOM)
    root = ET.Element(f"{{{ATOM}}}feed")

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{ATOM}}}{tag}", {k: xml_text(v) for k, v in attrs.items()})
        if text is not None:
            el.text = xml_text(text)
        return el

    sub(root, "id", _id("feed", image, branch))
    sub(root, "title", title or f"{image} {branch}", type="text")
    sub(root, "updated", _stamp(max((e.created_at for e in kept), default=since)))
    author = sub(root, "author")  # Atom wants an author for every entry: the feed's counts
    sub(author, "name", image)
    sub(root, "generator", "Changeover")
    for e in kept:
        entry = sub(root, "entry")
        sub(entry, "id", _id("entry", image, branch, e.id))
        sub(entry, "title", e.title, type="text")
        sub(entry, "updated", _stamp(e.created_at))
        sub(entry, "published", _stamp(e.created_at))
        if e.link:
            sub(entry, "link", rel="alternate", href=e.link)
        if xml_text(e.body):
            sub(entry, "content", e.body, type="text")
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body
