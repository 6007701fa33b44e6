"""The Atom feed of a branch's news, built from plain values: well-formed whatever the
text holds, every user string a text node, the same bytes for the same entries."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import feedparser
from hypothesis import given
from hypothesis import strategies as st

from changeover.control.news.feed import FEED_ENTRIES, FeedEntry, atom_feed, xml_text

A = "{http://www.w3.org/2005/Atom}"


def entry(i: int, title: str = "t", body: str = "", link: str | None = None) -> FeedEntry:
    return FeedEntry(i, title, body, link, 1_750_000_000.0 + i)


@given(st.text(max_size=300), st.text(max_size=300))
def test_any_text_comes_back_as_that_text(title: str, body: str) -> None:
    data = atom_feed("img", "live", [entry(1, title, body)], since=0)
    root = ET.fromstring(data)  # well-formed, whatever the text held
    (e,) = root.findall(f"{A}entry")
    assert e.findtext(f"{A}title") == xml_text(title).replace("\r\n", "\n").replace("\r", "\n")
    # A parser normalises line ends; nothing else of the text changes.
    assert (e.findtext(f"{A}content") or "") == xml_text(body).replace("\r\n", "\n").replace(
        "\r", "\n"
    )
    assert [el.tag for el in e] == [f"{A}{t}" for t in ("id", "title", "updated", "published")] + (
        [f"{A}content"] if xml_text(body) else []
    )


def test_markup_and_quotes_are_escaped_in_text_and_attributes() -> None:
    hostile = '"><script>alert(1)</script><a href="'
    data = atom_feed(
        "img", "live", [entry(1, hostile, hostile, "https://x.test/?q=" + hostile)], since=0
    )
    assert b"<script" not in data and b"<a " not in data
    root = ET.fromstring(data)
    assert {el.tag for el in root.iter()} <= {
        f"{A}{t}"
        for t in ("feed", "id", "title", "updated", "author", "name", "generator", "entry",
                  "published", "link", "content")
    }  # fmt: skip
    link = root.find(f"{A}entry/{A}link")
    assert link is not None and link.get("href") == "https://x.test/?q=" + hostile


def test_characters_xml_cannot_hold_are_dropped() -> None:
    data = atom_feed("img", "live", [entry(1, "a\x00b\x1bc\ufffed\ud800e")], since=0)
    assert ET.fromstring(data).findtext(f"{A}entry/{A}title") == "abcde"


def test_same_entries_same_bytes_and_only_the_newest_kept() -> None:
    entries = [entry(i, f"n{i}") for i in range(80, 0, -1)]
    first = atom_feed("img", "live", entries, since=0)
    assert first == atom_feed("img", "live", list(entries), since=0)
    parsed = feedparser.parse(first)
    assert not parsed.bozo and parsed.version == "atom10"
    assert len(parsed.entries) == FEED_ENTRIES
    assert parsed.entries[0].title == "n80"
    # Empty: still valid, its updated time the one given.
    empty = feedparser.parse(atom_feed("img", "live", [], since=1_700_000_000.0))
    assert not empty.bozo and empty.entries == []
    assert empty.feed.updated == "2023-11-14T22:13:20Z"
    # Ids differ per feed and per entry, and stay put.
    other = feedparser.parse(atom_feed("img", "beta", entries, since=0))
    assert other.feed.id != parsed.feed.id
    assert parsed.entries[0].id != parsed.entries[1].id
