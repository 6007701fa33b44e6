"""The CLI as a user types it, against a real server: the README walk-through and its errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests_helpers import CLI, wait_for

pytestmark = pytest.mark.timeout(300)


def make_build(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_walkthrough_push_diff_accept_branch(server: Any, tmp_path: Path) -> None:
    v1 = make_build(tmp_path / "v1", {"arena": b"binary-1" * 1000, "maps/a.pak": os.urandom(50000)})
    v2 = make_build(
        tmp_path / "v2",
        {"arena": b"binary-2" * 1000, "maps/a.pak": (v1 / "maps/a.pak").read_bytes()},
    )
    ok(server.cli("image", "create", "walk"))

    pushed = json.loads(
        ok(server.cli("push", str(v1), "--image", "walk", "--label", "1.0", "--wait", "--json"))
    )
    assert pushed["status_name"] == "Completed"
    diff = json.loads(
        ok(
            server.cli(
                "diff",
                "create",
                "--image",
                "walk",
                "--update",
                str(pushed["id"]),
                "--wait",
                "--json",
            )
        )
    )
    assert diff["report"]["totals"]["added"]["files"] == 2
    version = json.loads(ok(server.cli("diff", "accept", str(diff["id"]), "--wait", "--json")))
    assert (version["number"], version["status_name"]) == (1, "Completed")

    out = ok(server.cli("push", str(v2), "--image", "walk", "--label", "1.1", "--wait"))
    assert "uploaded 1 file(s)" in out
    update_id = out.split()[1].rstrip(":")
    shown = ok(server.cli("diff", "create", "--image", "walk", "--update", update_id, "--wait"))
    assert "changed" in shown and "estimated download" in shown
    locked = server.cli("diff", "create", "--image", "walk", "--update", update_id)
    assert locked.returncode == 5
    assert "image walk is locked by diff" in locked.stderr
    diff_id = json.loads(ok(server.cli("image", "show", "walk", "--json")))["locked_by_diff"]
    ok(server.cli("diff", "accept", str(diff_id), "--wait"))

    ok(server.cli("branch", "set", "production", "--image", "walk", "--version", "latest"))
    ok(server.cli("branch", "set", "staging", "--image", "walk", "--version", "1.0"))
    branches = json.loads(ok(server.cli("branch", "list", "--image", "walk", "--json")))
    assert {b["name"]: b["version"] for b in branches} == {"production": 2, "staging": 1}
    versions = json.loads(ok(server.cli("version", "list", "--image", "walk", "--json")))
    assert [v["label"] for v in versions] == ["1.0", "1.1"]
    history = json.loads(
        ok(server.cli("branch", "history", "production", "--image", "walk", "--json"))
    )
    assert history[0]["to_version"] == 2


def test_a_version_job_shows_created_and_a_failed_one_is_retried(
    server: Any, tmp_path: Path
) -> None:
    """Seed 000's Image Version Status from 1 Created on, and the retry of a version job
    that failed (its store lost a blob between the analysis and the accept)."""
    content = os.urandom(20000)
    build = make_build(tmp_path / "b", {"game.bin": content})
    ok(server.cli("image", "create", "vretry"))
    pushed = json.loads(ok(server.cli("push", str(build), "--image", "vretry", "--wait", "--json")))
    args = ["diff", "create", "--image", "vretry", "--update", str(pushed["id"]), "--wait"]
    diff = json.loads(ok(server.cli(*args, "--json")))
    sha = hashlib.sha256(content).hexdigest()
    (blob,) = server.data.glob(f"store/**/blobs/{sha[:2]}/{sha}")
    aside = tmp_path / "blob"
    shutil.move(blob, aside)

    version = json.loads(ok(server.cli("diff", "accept", str(diff["id"]), "--json")))
    assert (version["status"], version["status_name"]) == (1, "Created")
    c = server.client()
    failed = wait_for(
        lambda: (v := c.get(f"/versions/{version['id']}").json())["status"] == 6 and v,
        30,
        "the version job to fail",
    )
    assert "lacks 1 blob" in failed["error"]

    shutil.move(aside, blob)
    retried = json.loads(
        ok(server.cli("version", "retry", "--image", "vretry", "1", "--wait", "--json"))
    )
    assert (retried["number"], retried["status_name"]) == (1, "Completed")
    again = server.cli("version", "retry", "--image", "vretry", "1")
    assert again.returncode != 0 and "only a failed job can be retried" in again.stderr


def test_bad_builds_are_refused_before_upload(server: Any, tmp_path: Path) -> None:
    ok(server.cli("image", "create", "bad"))
    empty = tmp_path / "empty"
    empty.mkdir()
    r = server.cli("push", str(empty), "--image", "bad")
    assert r.returncode == 3
    assert "is empty" in r.stderr

    escaping = make_build(tmp_path / "escaping", {"ok.txt": b"1"})
    (escaping / "evil").symlink_to("/etc/passwd")
    r = server.cli("push", str(escaping), "--image", "bad")
    assert r.returncode == 3
    assert "evil" in r.stderr and "outside the build" in r.stderr

    non_utf8 = make_build(tmp_path / "nonutf8", {"ok.txt": b"1"})
    fd = os.open(os.fsencode(non_utf8) + b"/bad\xffname", os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    r = server.cli("push", str(non_utf8), "--image", "bad")
    assert r.returncode == 3
    assert "not valid UTF-8" in r.stderr

    r = server.cli("push", str(tmp_path / "missing"), "--image", "bad")
    assert r.returncode == 3
    # Nothing reached the server.
    assert json.loads(ok(server.cli("image", "show", "bad", "--json")))["current_version"] is None


def test_unknown_image_label_and_tokens(server: Any, tmp_path: Path) -> None:
    build = make_build(tmp_path / "b", {"zero-byte": b"", "x": b"x"})
    r = server.cli("push", str(build), "--image", "nope")
    assert r.returncode == 4
    assert "no image named 'nope'" in r.stderr

    viewer = server.token("viewer")
    r = server.cli("image", "create", "viewer-made", token=viewer)
    assert r.returncode == 6
    assert "scope 'viewer'" in r.stderr and "admin" in r.stderr
    ci = server.token("ci")
    r = server.cli("image", "create", "ci-made", token=ci)
    assert r.returncode == 6
    ok(server.cli("image", "create", "tok"))
    pushed = json.loads(
        ok(server.cli("push", str(build), "--image", "tok", "--wait", "--json", token=ci))
    )
    assert pushed["status_name"] == "Completed"
    assert pushed["file_count"] == 2

    r = server.cli("image", "list", token="cho_1_" + "x" * 43)
    assert r.returncode == 6
    assert "not recognised" in r.stderr
    r = server.cli("image", "list", token="")
    assert r.returncode == 6
    assert "no access token" in r.stderr

    no_server = subprocess.run(
        [*CLI, "image", "list"],
        env={k: v for k, v in os.environ.items() if not k.startswith("CHANGEOVER_")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert no_server.returncode == 3
    assert "--server" in no_server.stderr


def test_push_killed_midway_resumes(server: Any, tmp_path: Path) -> None:
    big = os.urandom(128 << 20)
    build = make_build(tmp_path / "big", {"data.pak": big, "small.txt": b"s"})
    ok(server.cli("image", "create", "resume"))
    uploads = server.data / "store" / "uploads"

    proc = subprocess.Popen(
        [*CLI, "push", str(build), "--image", "resume"],
        env={**os.environ, **server.env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def partly_uploaded() -> bool:
        return any(p.stat().st_size > (8 << 20) for p in uploads.glob("*.part"))

    try:
        # Every millisecond: on loopback the rest of the upload takes a fraction of a
        # second, and a slower poll saw it all arrive before the kill.
        wait_for(partly_uploaded, 60, "part of the upload to reach the server", max_delay_s=0.001)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    held = max(p.stat().st_size for p in uploads.glob("*.part"))
    assert 0 < held < len(big)

    out = ok(server.cli("push", str(build), "--image", "resume", "--wait", "--json"))
    assert json.loads(out)["status_name"] == "Completed"
    assert not list(uploads.glob("*.part"))
    # Every stored blob decompresses to the bytes its name promises.
    from changeover.content.store import LocalStore

    store = LocalStore(server.data / "store")
    import hashlib

    sha = hashlib.sha256(big).hexdigest()
    store.verify_blob(sha)
