"""Tokens, scopes and hostile input against a real server: clear errors, nothing lost."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from tests_helpers import build_manifest, push_files, wait_for, wait_job

pytestmark = pytest.mark.timeout(120)


def test_missing_malformed_unknown_expired_and_revoked_tokens(server: Any) -> None:
    base = server.url + "/api/v1"
    cases = {
        None: "no access token",
        "Basic abc": "must read 'Bearer <token>'",
        "Bearer nonsense": "malformed access token",
        "Bearer cho_999999_" + "a" * 43: "not recognised",
    }
    for header, message in cases.items():
        headers = {"Authorization": header} if header else {}
        r = httpx.get(base + "/images", headers=headers)
        assert r.status_code == 401, header
        assert r.json()["error"] == "unauthorized"
        assert message in r.json()["message"]

    expiring = server.token("viewer", expires_in_s=1)
    reader = server.client(expiring)
    assert reader.get("/images").status_code == 200

    def expired() -> bool:
        r = reader.get("/images")
        return r.status_code == 401 and "expired" in r.json()["message"]

    wait_for(expired, 10, "the token to expire")

    revoked = server.token("viewer")
    rows = server.client().get("/tokens").json()
    token_id = next(t["id"] for t in rows if revoked.startswith(f"cho_{t['id']}_"))
    assert server.client().delete(f"/tokens/{token_id}").json()["revoked_at"] is not None
    r = server.client(revoked).get("/images")
    assert r.status_code == 401
    assert "revoked" in r.json()["message"]
    # Tokens are listed without their secrets.
    assert all("token" not in t and "secret_sha256" not in t for t in rows)


@pytest.mark.parametrize(
    ("scope", "allowed"),
    [
        ("viewer", {"read"}),
        ("ci", {"read", "push"}),
        ("agent", {"read"}),
        ("admin", {"read", "push", "admin"}),
    ],
)
def test_scopes(server: Any, scope: str, allowed: set[str]) -> None:
    admin = server.client()
    image = f"scoped-{scope}"
    admin.post("/images", json={"name": image})
    c = server.client(server.token(scope))
    attempts = {
        "read": lambda: c.get(f"/images/{image}"),
        "push": lambda: c.post(
            f"/images/{image}/updates", json={"manifest": build_manifest({"f": scope.encode()})}
        ),
        "admin": lambda: c.post("/images", json={"name": f"{image}-new"}),
    }
    for action, attempt in attempts.items():
        r = attempt()
        if action in allowed:
            assert r.status_code in (200, 201), (scope, action, r.text)
        else:
            assert r.status_code == 403, (scope, action, r.text)
            assert f"scope {scope!r}" in r.json()["message"]
    # Branch changes and token management are the admin's.
    if "admin" not in allowed:
        assert c.post("/tokens", json={"scope": "admin", "name": "x"}).status_code == 403


def test_hostile_manifests_are_refused_and_store_nothing(server: Any) -> None:
    c = server.client()
    c.post("/images", json={"name": "hostile"})
    good = build_manifest({"a": b"a"})["files"][0]
    bad_manifests = {
        "../../etc/passwd": "component '..'",
        "/etc/passwd": "absolute path",
        "a/./b": "component '.'",
        "a\\b": "backslash",
        "a\x00b": "control character",
        "": "empty path",
        "x" * 5000: "longer than",
    }
    for path, message in bad_manifests.items():
        r = c.post(
            "/images/hostile/updates", json={"manifest": {"files": [{**good, "path": path}]}}
        )
        assert r.status_code == 400, path
        assert message in r.json()["message"]

    other = [
        ({"files": [good, good]}, "duplicate path"),
        ({"files": [{**good, "size": -1}]}, "non-negative"),
        ({"files": [{**good, "sha256": "zz"}]}, "64 lowercase hex"),
        ({"files": [{**good, "path": "a"}, {**good, "path": "a/b"}]}, "both a file and a dir"),
        ({"files": [{**good, "link": "../../x", "path": "l"}]}, "outside the build"),
        ({"files": []}, "no files"),
        ({"nofiles": 1}, "'files' list"),
        ({"files": [{"path": "a"}]}, "lacks"),
        ({"files": [{**good, "extra": 1}]}, "unknown manifest field"),
    ]
    for manifest, message in other:
        r = c.post("/images/hostile/updates", json={"manifest": manifest})
        assert r.status_code == 400, manifest
        assert message in r.json()["message"], r.json()

    assert c.post("/images/hostile/updates", content=b"{not json").status_code == 422
    huge = c.post(
        "/images/hostile/updates",
        content=b'{"manifest": {"files": [' + b" " * (65 << 20) + b"]}}",
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    assert huge.json()["error"] == "too_large"
    # None of it created an update: the next real push is update number 1 of this image.
    upd = push_files(c, "hostile", {"ok": b"fine"}, None)
    assert wait_job(c, f"/updates/{upd['id']}")["status_name"] == "Completed"


def test_names_ids_and_labels(server: Any) -> None:
    c = server.client()
    for name in ("Upper", "-dash", "a" * 64, "sp ace", "../x", ""):
        r = c.post("/images", json={"name": name})
        assert r.status_code == 400, name
        assert "not valid" in r.json()["message"]
    c.post("/images", json={"name": "named"})
    assert c.post("/images", json={"name": "named"}).status_code == 409
    assert c.get("/images/missing").status_code == 404
    assert c.get("/diffs/987654").status_code == 404
    assert c.get("/updates/987654").status_code == 404
    assert c.get("/images/named/versions/latest").status_code == 404
    assert c.put("/images/named/branches/prod", json={"version": "1"}).status_code == 404
    for label in ("latest", "42", "has space", "x" * 101):
        r = c.post(
            "/images/named/updates",
            json={"label": label, "manifest": build_manifest({"f": b"1"})},
        )
        assert r.status_code == 400, label
    assert c.get("/uploads/NOTAHASH").status_code == 400
    r = c.put(f"/uploads/{hashlib.sha256(b'').hexdigest()}", params={"offset": -1, "size": 0})
    assert r.status_code == 422


def test_content_is_served_with_cache_headers(server: Any) -> None:
    c = server.client()
    c.post("/images", json={"name": "served"})
    data = b"served content" * 50
    upd = push_files(c, "served", {"f": data}, None)
    wait_job(c, f"/updates/{upd['id']}")
    sha = hashlib.sha256(data).hexdigest()
    r = httpx.get(f"{server.url}/content/blobs/{sha[:2]}/{sha}")
    assert r.status_code == 200
    assert "immutable" in r.headers["cache-control"]
    import zstandard

    assert zstandard.ZstdDecompressor().decompress(r.content) == data
    m = httpx.get(f"{server.url}/content/manifests/{upd['manifest_id']}.json")
    assert hashlib.sha256(m.content).hexdigest() == upd["manifest_id"]
    assert httpx.get(f"{server.url}/content/%2e%2e/server.log").status_code in (400, 404)
    assert httpx.get(f"{server.url}/content/blobs/none").status_code == 404
