"""What the launcher keeps of a feed's text and links: plain text, http(s) only."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from changeover.launcher.news import plain_text, safe_link


def test_markup_is_stripped_and_scripts_take_their_text_with_them() -> None:
    assert plain_text("<p>Hello <b>world</b></p>") == "Hello world"
    assert plain_text("<script>alert(1)</script>News<style>p{}</style>") == "News"
    assert plain_text("<SCRIPT type='x'>bad()</SCRIPT>ok") == "ok"
    assert plain_text("A &amp; B &lt;tag&gt; &#x263A;") == "A & B <tag> ☺"
    assert plain_text("line\none\t two") == "line one two"
    assert plain_text("bidi\u202eevil\u200b zero\x07") == "bidievil zero"
    assert plain_text("x" * 500) == "x" * 299 + "…"


@given(st.text(max_size=400))
def test_any_text_becomes_one_bounded_line_without_controls(text: str) -> None:
    out = plain_text(text)
    assert len(out) <= 300
    assert out == out.strip()
    assert not any(ch in out for ch in "\n\r\t\x00\u202e")


def test_only_http_and_https_links_pass() -> None:
    assert safe_link("https://game.test/news?a=1") == "https://game.test/news?a=1"
    assert safe_link("HTTP://game.test/") == "HTTP://game.test/"
    for bad in (
        "javascript:alert(1)",
        " javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,x",
        "file:///etc/passwd",
        "vbscript:x",
        "https://",
        "//game.test/x",
        "/relative",
        "https://game.test/a b",
        "https://game.test/\x00",
        "https://[broken/",
        "https://game.test/" + "x" * 2000,
        None,
        42,
    ):
        assert safe_link(bad) is None, bad
