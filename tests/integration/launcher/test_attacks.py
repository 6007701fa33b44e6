"""One test per attack on the content tree: each is refused and the install stays intact.

The attacks are made the way a compromised mirror would: by changing files in the tree the
server serves. Signed metadata (python-tuf) and hashes in signed manifests must catch all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests_helpers import Server, release, run_cli, start_server, stop_server, wait_for

from .conftest import expected, make_versions, on_disk

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def mirror(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    """A fresh control plane (its content tree is the mirror we attack).

    It never re-signs on its own (a frozen mirror); tests marked ``expiry`` get a short
    timestamp lifetime.
    """
    marker = request.node.get_closest_marker("expiry")
    env = {
        "CHANGEOVER_TIMESTAMP_EXPIRY_S": str(marker.args[0] if marker else 86400),
        "CHANGEOVER_PUBLISH_EVERY_S": "3600",
    }
    srv = start_server(tmp_path / "server", None, env=env)
    try:
        c = srv.client()
        c.post("/images", json={"name": "game"})
        for i, files in enumerate(make_versions(seed=11)[:2]):
            release(c, "game", files, f"v{i + 1}")
        yield srv
    finally:
        stop_server(srv)


def content(srv: Server) -> Path:
    return srv.data / "store" / "content"


def sync(srv: Server, target: Path) -> tuple[int, str]:
    r = run_cli(
        "launcher", "sync", srv.url + "/content", str(target), "--image", "game", "--branch", "live"
    )
    return r.returncode, r.stderr


def install_v1(srv: Server, target: Path) -> None:
    assert srv.client().put("/images/game/branches/live", json={"version": "1"}).status_code == 200
    code, err = sync(srv, target)
    assert code == 0, err


def move_to_v2(srv: Server) -> None:
    assert srv.client().put("/images/game/branches/live", json={"version": "2"}).status_code == 200


V1 = make_versions(seed=11)[0]


def test_tampered_blob_is_refused(mirror: Server, tmp_path: Path) -> None:
    target = tmp_path / "game"
    install_v1(mirror, target)
    move_to_v2(mirror)
    v2 = make_versions(seed=11)[1]
    import hashlib

    changed = next(b for p, b in v2.items() if V1.get(p) != b and len(b) > 1000)
    sha = hashlib.sha256(changed).hexdigest()
    blob = content(mirror) / "blobs" / sha[:2] / sha
    import zstandard

    blob.write_bytes(zstandard.ZstdCompressor().compress(b"evil" * (len(changed) // 4)))
    code, err = sync(mirror, target)
    assert code == 7
    assert sha in err
    assert on_disk(target) == expected(V1)


def test_tampered_manifest_is_refused(mirror: Server, tmp_path: Path) -> None:
    target = tmp_path / "game"
    install_v1(mirror, target)
    move_to_v2(mirror)
    for path in (content(mirror) / "targets" / "manifests").iterdir():
        # Same length, one hash changed: only the signed hash of the file can tell.
        raw = path.read_bytes()
        at = raw.index(b'"sha256":"') + 10
        path.write_bytes(raw[:at] + (b"0" if raw[at : at + 1] != b"0" else b"1") + raw[at + 1 :])
    code, err = sync(mirror, target)
    assert code == 7
    assert "the file list (manifest) of game/live was refused" in err
    assert "does not match the length and hash it is signed with" in err
    assert "Error" not in err  # python-tuf's exception names are translated
    assert on_disk(target) == expected(V1)


def test_rollback_to_an_older_branch_state_is_refused(mirror: Server, tmp_path: Path) -> None:
    target = tmp_path / "game"
    old_timestamp = (content(mirror) / "metadata" / "timestamp.json").read_bytes()
    install_v1(mirror, target)
    move_to_v2(mirror)
    assert sync(mirror, target)[0] == 0
    # The mirror now replays the timestamp from before v1 was pointed at.
    (content(mirror) / "metadata" / "timestamp.json").write_bytes(old_timestamp)
    code, err = sync(mirror, target)
    assert code == 7
    assert "is older than what this launcher has already seen (a rollback)" in err
    assert "BadVersionNumber" not in err


@pytest.mark.expiry(20)
def test_frozen_metadata_past_expiry_is_refused(mirror: Server, tmp_path: Path) -> None:
    target = tmp_path / "game"
    install_v1(mirror, target)
    # Nobody re-signs (the mirror froze): once the 20 s timestamp expires, clients refuse.
    attempts: list[Path] = []

    def refused() -> str | None:
        attempts.append(tmp_path / f"attempt{len(attempts)}")
        code, err = sync(mirror, attempts[-1])
        return err if code == 7 else None

    err = wait_for(refused, 120, "the timestamp to expire")
    assert "has expired" in err
    assert "ExpiredMetadata" not in err
    assert not os.path.lexists(attempts[-1])  # the refused install was never made
    assert on_disk(target) == expected(V1)


def test_mixed_metadata_is_refused(mirror: Server, tmp_path: Path) -> None:
    target = tmp_path / "game"
    install_v1(mirror, target)
    meta = content(mirror) / "metadata"
    versions = sorted(int(p.name.split(".")[0]) for p in meta.glob("*.targets.json"))
    older = meta / f"{versions[0]}.targets.json"
    move_to_v2(mirror)
    newest = max(int(p.name.split(".")[0]) for p in meta.glob("*.targets.json"))
    # Serve an older targets file under the newest name: a mix of two repository states.
    shutil.copy(older, meta / f"{newest}.targets.json")
    code, err = sync(mirror, tmp_path / "fresh")
    assert code == 7
    assert "refused" in err


def test_pinned_root_follows_key_rotation_and_refuses_a_foreign_root(
    mirror: Server, tmp_path: Path
) -> None:
    exported = run_cli("keys", "root", "--data", str(mirror.data))
    assert exported.returncode == 0, exported.stderr
    pinned = tmp_path / "root.json"
    pinned.write_text(exported.stdout)
    target = tmp_path / "game"
    assert (
        mirror.client().put("/images/game/branches/live", json={"version": "1"}).status_code == 200
    )

    def sync_pinned(root: Path, where: Path) -> tuple[int, str]:
        r = run_cli(
            "launcher",
            "sync",
            mirror.url + "/content",
            str(where),
            "--image",
            "game",
            "--branch",
            "live",
            "--root",
            str(root),
        )
        return r.returncode, r.stderr

    assert sync_pinned(pinned, target)[0] == 0
    for role in ("targets", "timestamp", "root"):
        assert run_cli("keys", "rotate", role, "--data", str(mirror.data)).returncode == 0
    move_to_v2(mirror)
    code, err = sync_pinned(pinned, target)
    assert code == 0, err
    assert on_disk(target) == expected(make_versions(seed=11)[1])

    # A root from some other repository must not be able to vouch for this one.
    other = tmp_path / "other-server"
    other_srv = start_server(other, None)
    stop_server(other_srv)
    foreign = tmp_path / "foreign.json"
    foreign.write_text(run_cli("keys", "root", "--data", str(other)).stdout)
    code, err = sync_pinned(foreign, tmp_path / "elsewhere")
    assert code == 7
    assert "not signed by the keys this launcher trusts" in err
    assert not os.path.lexists(tmp_path / "elsewhere")
