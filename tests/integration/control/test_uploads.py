"""Batched and streamed uploads, and the token cache, against a real server process."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from changeover.client import ApiClient
from changeover.content.store import LocalStore
from changeover.control.auth import services as auth_services
from changeover.control.builds.views import BATCH_MAX_BYTES, BATCH_MAX_FILES
from changeover.control.db import Database
from changeover.errors import InvalidInput
from changeover.push import push
from tests_helpers import build_manifest, wait_for, wait_job

pytestmark = pytest.mark.timeout(120)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def batch_body(files: list[tuple[str, int, bytes]]) -> bytes:
    """A batch body: the JSON line of (sha256, size), then the bytes back to back."""
    header = {"files": [{"sha256": h, "size": n} for h, n, _ in files]}
    return json.dumps(header).encode() + b"\n" + b"".join(d for _, _, d in files)


def post_batch(c: httpx.Client, body: bytes) -> httpx.Response:
    return c.post("/uploads/batch", content=body)


def store_of(server: Any) -> LocalStore:
    return LocalStore(server.data / "store")


def nothing_left(server: Any, digest: str) -> bool:
    store = store_of(server)
    return (
        not store.has(digest)
        and not (store.uploads / f"{digest}.part").exists()
        and not list(store.content.rglob(".tmp-*"))
    )


def test_a_batch_stores_every_file_and_the_update_completes(server: Any) -> None:
    c = server.client()
    assert c.post("/images", json={"name": "batched"}).status_code == 201
    files = {f"cfg/{i}.ini": f"setting_{i} = {i * 7}\n".encode() * (i + 1) for i in range(40)}
    files["empty"] = b""
    r = c.post("/images/batched/updates", json={"manifest": build_manifest(files)})
    upd = r.json()
    assert upd["batch_limits"] == {"bytes": BATCH_MAX_BYTES, "files": BATCH_MAX_FILES}
    assert {m["offset"] for m in upd["missing"]} == {0}
    by_sha = {sha(d): d for d in files.values()}
    body = batch_body([(m["sha256"], m["size"], by_sha[m["sha256"]]) for m in upd["missing"]])
    answer = post_batch(c, body)
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert (out["stored"], out["refused"]) == (len(by_sha), 0)
    assert all(f["complete"] for f in out["files"])
    store = store_of(server)
    for digest, data in by_sha.items():
        assert store.raw_size(digest) == len(data)
        store.verify_blob(digest)
        assert c.get(f"/uploads/{digest}").json()["complete"] is True
    c.post(f"/updates/{upd['id']}/complete")
    assert wait_job(c, f"/updates/{upd['id']}")["status_name"] == "Completed"


def test_a_lying_item_is_refused_alone(server: Any) -> None:
    c = server.client()
    good1, good2 = os.urandom(3000), b"plain text " * 100
    real, lie = b"the file the manifest lists", b"other bytes, of same length"
    assert len(real) == len(lie)
    body = batch_body(
        [
            (sha(good1), len(good1), good1),
            (sha(real), len(real), lie),
            (sha(good2), len(good2), good2),
        ]
    )
    r = post_batch(c, body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["stored"], out["refused"]) == (2, 1)
    assert [f["complete"] for f in out["files"]] == [True, False, True]
    refused = out["files"][1]
    assert refused["sha256"] == sha(real)
    assert refused["error"] == "integrity"
    assert refused["got"] == sha(lie)
    store = store_of(server)
    assert b"".join(store.open_blob(sha(good1))) == good1
    assert b"".join(store.open_blob(sha(good2))) == good2
    assert nothing_left(server, sha(real))
    assert not store.has(sha(lie))


@pytest.mark.parametrize(
    ("extra", "what"),
    [(b"trailing", "more bytes than declared"), (None, "fewer bytes than declared")],
)
def test_a_body_that_does_not_hold_the_declared_bytes_stores_nothing(
    server: Any, extra: bytes | None, what: str
) -> None:
    c = server.client()
    a, b = os.urandom(500), os.urandom(600)
    body = batch_body([(sha(a), len(a), a), (sha(b), len(b), b)])
    body = body + extra if extra is not None else body[:-1]
    r = post_batch(c, body)
    assert r.status_code == 400, what
    assert "nothing was stored" in r.json()["message"]
    assert nothing_left(server, sha(a))
    assert nothing_left(server, sha(b))


def test_oversize_and_malformed_batches_are_refused(server: Any) -> None:
    c = server.client()
    # Declared sizes over the limit, with a body that holds a fraction of them.
    small = b"x" * 10
    declared = batch_body([(sha(small), BATCH_MAX_BYTES + 1, small)])
    r = post_batch(c, declared)
    assert r.status_code == 413
    assert r.json()["error"] == "too_large"
    # A body really over the limit is refused as it arrives.
    big = os.urandom(BATCH_MAX_BYTES + (512 << 10))
    r = post_batch(c, batch_body([(sha(big), len(big), big)]))
    assert r.status_code == 413
    assert nothing_left(server, sha(big))
    # Too many files.
    many = batch_body([(sha(b"%d" % i), 1, b"%d" % (i % 10)) for i in range(BATCH_MAX_FILES + 1)])
    assert post_batch(c, many).status_code == 413
    # Not a batch at all, a bad hash, a header that lies about its shape.
    for body in [
        b"no header line",
        b'{"files": [{"sha256": "../../x", "size": 1}]}\nx',
        b'{"files": [{"sha256": "' + sha(b"x").encode() + b'", "size": -1}]}\n',
        b'{"files": "nope"}\n',
        b"[1, 2]\n",
    ]:
        r = post_batch(c, body)
        assert r.status_code == 400, body
        assert r.json()["error"] == "invalid_input"
    # A read-only token may not upload.
    viewer = server.client(server.token("viewer"))
    assert post_batch(viewer, batch_body([(sha(small), 10, small)])).status_code == 403
    assert nothing_left(server, sha(small))


def test_the_update_says_where_each_started_upload_stands(server: Any) -> None:
    c = server.client()
    assert c.post("/images", json={"name": "resumable"}).status_code == 201
    data = os.urandom(300_000)
    digest = sha(data)
    r = c.put(f"/uploads/{digest}", params={"offset": 0, "size": len(data)}, content=data[:1234])
    assert r.json() == {"sha256": digest, "complete": False, "offset": 1234}
    upd = c.post(
        "/images/resumable/updates", json={"manifest": build_manifest({"big.bin": data})}
    ).json()
    assert upd["missing"] == [{"sha256": digest, "size": len(data), "offset": 1234}]
    r = c.put(f"/uploads/{digest}", params={"offset": 1234, "size": len(data)}, content=data[1234:])
    assert r.json() == {"sha256": digest, "complete": True, "offset": len(data)}
    store_of(server).verify_blob(digest)
    assert not (store_of(server).uploads / f"{digest}.part").exists()


def test_a_token_revoked_elsewhere_is_refused_within_the_cache_bound(server: Any) -> None:
    token = server.token("ci")
    client = server.client(token)
    assert client.get("/whoami").status_code == 200  # now cached by the server
    token_id = int(token.split("_")[1])
    # Revoke it straight in the database, as another server process would: this server's
    # cache is not told, so it may answer from it for up to TOKEN_CACHE_TTL_S.
    url = server.database_url or f"sqlite:///{(server.data / 'changeover.db').resolve()}"
    db = Database(url)
    try:
        with db.write() as s:
            auth_services.revoke_token(s, token_id)
    finally:
        db.dispose()

    def refused() -> bool:
        return client.get("/whoami").status_code == 401

    wait_for(refused, auth_services.TOKEN_CACHE_TTL_S + 3, "the revocation to take effect")
    r = client.get("/images")
    assert r.status_code == 401
    assert "revoked" in r.json()["message"]


def test_a_token_revoked_through_this_server_is_refused_at_once(server: Any) -> None:
    token = server.token("ci")
    client = server.client(token)
    for _ in range(3):
        assert client.get("/whoami").status_code == 200
    token_id = int(token.split("_")[1])
    assert server.client().delete(f"/tokens/{token_id}").status_code == 200
    r = client.get("/whoami")
    assert r.status_code == 401
    assert "revoked" in r.json()["message"]


# -- the client: changeover.push against the real server ------------------------------------


def make_build(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_push_batches_small_files_streams_big_ones_and_resends_nothing(
    server: Any, tmp_path: Path
) -> None:

    files = {f"small/{i:03d}.txt": f"line {i}\n".encode() * (i + 3) for i in range(300)}
    files["big/a.bin"] = os.urandom(3 << 20)
    files["big/b.bin"] = os.urandom((1 << 20) + 1)
    build = make_build(tmp_path / "build", files)
    with ApiClient(server.url, server.admin_token) as api:
        api.post("/images", json={"name": "pushed"})
        progress: list[int] = []
        first = push(api, build, "pushed", None, on_upload=progress.append)
        assert first.uploaded_files == len(files)
        assert first.uploaded_bytes == sum(len(d) for d in files.values())
        assert sum(progress) == first.uploaded_bytes
        again = push(api, build, "pushed", None)
        assert (again.uploaded_files, again.uploaded_bytes) == (0, 0)
        done = api.wait_job(f"/updates/{first.update['id']}", poll_s=0.05)
        assert done["status_name"] == "Completed"
    store = store_of(server)
    for data in files.values():
        store.verify_blob(sha(data))
    assert not list(store.uploads.iterdir())


def test_push_resumes_a_started_upload_from_the_offset_it_is_told(
    server: Any, tmp_path: Path
) -> None:

    big = os.urandom(2 << 20)
    build = make_build(tmp_path / "build", {"big.bin": big, "tiny.txt": b"tiny"})
    c = server.client()
    r = c.put(f"/uploads/{sha(big)}", params={"offset": 0, "size": len(big)}, content=big[:5000])
    assert r.json()["offset"] == 5000
    with ApiClient(server.url, server.admin_token) as api:
        api.post("/images", json={"name": "resumed"})
        result = push(api, build, "resumed", None)
    assert result.uploaded_bytes == len(big) - 5000 + 4
    store_of(server).verify_blob(sha(big))


@pytest.mark.parametrize("kind", ["small", "big"])
def test_a_file_changed_during_the_push_is_refused_and_named(
    server: Any, tmp_path: Path, kind: str
) -> None:

    victim = {"small": "cfg/game.ini", "big": "paks/data.pak"}[kind]
    files = {"cfg/game.ini": b"difficulty = normal\n" * 10, "paks/data.pak": os.urandom(2 << 20)}
    files["cfg/other.ini"] = b"other = 1\n"
    build = make_build(tmp_path / f"build-{kind}", files)
    original = files[victim]

    def edit_after_scan(_files: int, _bytes: int) -> None:
        # Same size, other bytes: only the server's hash check can tell.
        (build / victim).write_bytes(bytes(b ^ 0xFF for b in original[:64]) + original[64:])

    image = f"changed-{kind}"
    with ApiClient(server.url, server.admin_token) as api:
        api.post("/images", json={"name": image})
        with pytest.raises(InvalidInput) as info:
            push(api, build, image, None, on_plan=edit_after_scan)
    assert victim in str(info.value)
    assert "changed while the build was pushed" in str(info.value)
    assert not store_of(server).has(sha(original))
