"""The launcher's reading of the servers' client compatibility, and the document the
control plane signs for it: the same rule on both sides."""

from __future__ import annotations

import json

import pytest

from changeover.content.client_versions import parse
from changeover.control.patchjobs.client_compat import document
from changeover.errors import UntrustedMetadata
from changeover.launcher.compat import answer, parse_document


def _read(ranges: set[tuple[str | None, str | None]]) -> tuple[list, str | None]:  # type: ignore[type-arg]
    return parse_document(document("arena-client", "production", ranges))


def test_a_client_some_live_server_accepts_is_ok() -> None:
    ranges, floor = _read({(None, "1.4"), (None, "1.5")})  # bleeding off: old and new servers
    assert floor is None
    for installed in ("1.4", "1.5", "0.9"):
        assert answer(installed, ranges, floor).status == "ok"


def test_a_client_every_server_finds_too_old_must_update() -> None:
    ranges, floor = _read({("1.5", "1.6"), ("1.5.2", None)})
    assert floor == "1.5"
    got = answer("1.4.9", ranges, floor)
    assert got.status == "update_required" and got.label == "update required"
    assert "no longer accept version 1.4.9" in got.message and "1.5 or newer" in got.message
    assert answer("1.5", ranges, floor).status == "ok"


def test_no_live_server_or_a_client_from_the_future_is_unknown() -> None:
    assert answer("1.4", *_read(set())).status == "unknown"
    future = answer("2.0", *_read({(None, "1.5")}))
    assert future.status == "unknown" and "newer than they are" in future.message


def test_the_document_is_stable_and_ordered() -> None:
    a = document("c", "p", {("1.2", "1.5"), (None, "1.4"), (None, None)})
    b = document("c", "p", {(None, None), ("1.2", "1.5"), (None, "1.4")})
    assert a == b
    doc = json.loads(a)
    assert doc["accepts"] == [
        {"client_min": None, "client_max": "1.4"},
        {"client_min": None, "client_max": None},
        {"client_min": "1.2", "client_max": "1.5"},
    ]
    assert doc["client_min"] is None
    # Version order, not text order: 1.10 is newer than 1.9.
    assert json.loads(document("c", "p", {("1.10", None), ("1.9", None)}))["client_min"] == "1.9"
    assert parse("1.10") > parse("1.9")


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"{}",
        b'{"accepts": "all"}',
        b'{"accepts": [{"client_min": "x.y", "client_max": null}]}',
        b'{"accepts": [], "client_min": "soon"}',
    ],
)
def test_a_malformed_document_is_refused(raw: bytes) -> None:
    with pytest.raises(UntrustedMetadata, match="malformed"):
        parse_document(raw)
