"""The builds API against a real server process, on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import httpx
import pytest

from tests_helpers import build_manifest, push_files, release, wait_job

pytestmark = pytest.mark.timeout(120)


def new_image(c: httpx.Client, name: str) -> None:
    r = c.post("/images", json={"name": name})
    assert r.status_code == 201, r.text


def test_push_diff_accept_branch_flow(server: Any) -> None:
    c = server.client()
    new_image(c, "arena-server")
    v1_files = {
        "bin/arena": b"\x7fELF" + b"a" * 5000,
        "data/map.pak": b"m" * 20000,
        "readme.txt": b"hi",
    }
    v1 = release(c, "arena-server", v1_files, "1.0.0")
    assert (v1["number"], v1["label"], v1["status_name"]) == (1, "1.0.0", "Completed")
    assert c.get("/images/arena-server").json()["current_version"] == 1

    v2_files = dict(v1_files)
    v2_files["bin/arena"] = b"\x7fELF" + b"b" * 6000
    v2_files["data/new.pak"] = b"n" * 100
    del v2_files["readme.txt"]
    upd = push_files(c, "arena-server", v2_files, "1.1.0")
    # Only the two new contents were missing: unchanged files are never uploaded again.
    assert sorted(m["size"] for m in upd["missing"]) == [100, 6004]
    wait_job(c, f"/updates/{upd['id']}")

    d = c.post("/images/arena-server/diffs", json={"update_id": upd["id"]}).json()
    # While a diff is outstanding the image is locked, with the diff's id in the error.
    locked = c.post("/images/arena-server/diffs", json={"update_id": upd["id"]})
    assert locked.status_code == 409
    assert locked.json()["error"] == "image_locked"
    assert f"image arena-server is locked by diff {d['id']}" in locked.json()["message"]

    done = wait_job(c, f"/diffs/{d['id']}")
    report = done["report"]
    assert report["base_version"] == 1
    assert report["totals"]["added"] == {"files": 1, "bytes": 100}
    assert report["totals"]["changed"] == {"files": 1, "bytes": 6004}
    assert report["totals"]["removed"] == {"files": 1, "bytes": 2}
    assert report["totals"]["unchanged"] == {"files": 1, "bytes": 20000}
    changes = {f["path"]: f["change"] for f in report["files"]}
    assert changes == {
        "bin/arena": "changed",
        "data/map.pak": "unchanged",
        "data/new.pak": "added",
        "readme.txt": "removed",
    }
    # A host on v1 downloads only the two new contents, compressed.
    assert 0 < report["download_bytes"] < 6004 + 100

    v = c.post(f"/diffs/{d['id']}/accept").json()
    assert (v["status"], v["status_name"]) == (1, "Created")  # queued by the runner's next pass
    assert wait_job(c, f"/versions/{v['id']}")["number"] == 2
    assert c.get("/images/arena-server").json()["locked_by_diff"] is None

    for branch, ref in (("production", "1.0.0"), ("staging", "latest"), ("production", "2")):
        r = c.put(f"/images/arena-server/branches/{branch}", json={"version": ref})
        assert r.status_code == 200, r.text
    branches = {b["name"]: b["version"] for b in c.get("/images/arena-server/branches").json()}
    assert branches == {"production": 2, "staging": 2}
    history = c.get("/images/arena-server/branches/production/history").json()
    assert [(h["from_version"], h["to_version"]) for h in history] == [(None, 1), (1, 2)]
    assert all("admin" in h["actor"] and h["at"] > 0 for h in history)
    assert c.get("/images/arena-server/versions/latest").json()["number"] == 2


def test_reject_unlocks_and_duplicate_label_refused(server: Any) -> None:
    c = server.client()
    new_image(c, "dup")
    release(c, "dup", {"a": b"1"}, "1.0")
    upd = push_files(c, "dup", {"a": b"2"}, None)
    wait_job(c, f"/updates/{upd['id']}")
    d = c.post("/images/dup/diffs", json={"update_id": upd["id"]}).json()
    assert c.post(f"/diffs/{d['id']}/reject").json()["decision"] == "rejected"
    assert c.get("/images/dup").json()["locked_by_diff"] is None
    again = c.post(f"/diffs/{d['id']}/accept")
    assert again.status_code == 409
    assert "rejected" in again.json()["message"]

    r = c.post(
        "/images/dup/updates", json={"label": "1.0", "manifest": build_manifest({"a": b"3"})}
    )
    assert r.status_code == 409
    assert "label 1.0 is already version 1" in r.json()["message"]


def test_update_with_missing_uploads_fails_then_retry_succeeds(server: Any) -> None:
    c = server.client()
    new_image(c, "retry")
    content = b"late content" * 100
    r = c.post(
        "/images/retry/updates", json={"label": None, "manifest": build_manifest({"f": content})}
    )
    upd = r.json()
    # A diff asked for before the update is ready waits in Pending.
    d = c.post("/images/retry/diffs", json={"update_id": upd["id"]}).json()
    assert d["status_name"] == "Pending"
    c.post(f"/updates/{upd['id']}/complete")
    failed = wait_job(c, f"/updates/{upd['id']}")
    assert failed["status_name"] == "Failed"
    assert "never uploaded" in failed["error"]
    diff_failed = wait_job(c, f"/diffs/{d['id']}")
    assert diff_failed["status_name"] == "Failed"
    assert f"update {upd['id']} failed" in diff_failed["error"]

    sha = hashlib.sha256(content).hexdigest()
    put = c.put(f"/uploads/{sha}", params={"offset": 0, "size": len(content)}, content=content)
    assert put.json()["complete"] is True
    assert c.post(f"/updates/{upd['id']}/retry").json()["status_name"] == "Queued"
    assert wait_job(c, f"/updates/{upd['id']}")["status_name"] == "Completed"
    c.post(f"/diffs/{d['id']}/retry")
    assert wait_job(c, f"/diffs/{d['id']}")["status_name"] == "Completed"
    not_failed = c.post(f"/diffs/{d['id']}/retry")
    assert not_failed.status_code == 409
    assert "only a failed job can be retried" in not_failed.json()["message"]


def test_concurrent_diffs_take_the_lock_once(server: Any) -> None:
    c = server.client()
    new_image(c, "race")
    upd = push_files(c, "race", {"x": b"x"}, None)
    wait_job(c, f"/updates/{upd['id']}")
    codes: list[int] = []

    def attempt() -> None:
        with httpx.Client(base_url=server.url + "/api/v1", headers=c.headers) as own:
            codes.append(own.post("/images/race/diffs", json={"update_id": upd["id"]}).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201] + [409] * 7


def test_uploads_resume_and_verify(server: Any) -> None:
    c = server.client()
    data = bytes(range(256)) * 4000
    sha = hashlib.sha256(data).hexdigest()
    first = c.put(f"/uploads/{sha}", params={"offset": 0, "size": len(data)}, content=data[:300000])
    assert first.json() == {"sha256": sha, "complete": False, "offset": 300000}
    assert c.get(f"/uploads/{sha}").json()["offset"] == 300000
    wrong = c.put(f"/uploads/{sha}", params={"offset": 5, "size": len(data)}, content=data[5:])
    assert wrong.status_code == 409
    assert wrong.json()["offset"] == 300000
    rest = c.put(
        f"/uploads/{sha}", params={"offset": 300000, "size": len(data)}, content=data[300000:]
    )
    assert rest.json()["complete"] is True

    bogus = b"not what the hash says"
    fake_sha = hashlib.sha256(b"something else").hexdigest()
    bad = c.put(f"/uploads/{fake_sha}", params={"offset": 0, "size": len(bogus)}, content=bogus)
    assert bad.status_code == 422
    assert bad.json()["error"] == "integrity"
    assert c.get(f"/uploads/{fake_sha}").json() == {
        "sha256": fake_sha,
        "complete": False,
        "offset": 0,
    }

    too_long = c.put(f"/uploads/{fake_sha}", params={"offset": 0, "size": 3}, content=b"abcdef")
    assert too_long.status_code == 400
    assert c.get(f"/uploads/{fake_sha}").json()["offset"] == 0
