"""A control plane whose content tree lives in an S3-compatible bucket (a real S3-protocol
server on loopback): the launcher installs and updates from the bucket's public URL
alone, as from a CDN in front of it, and the control plane works on with its own disk's
copy of the content gone (every read goes through the bucket)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3_helpers import S3_CREDENTIALS
from tests_helpers import release, run_cli, start_server, stop_server

from .conftest import expected, make_versions, on_disk

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def _sync(url: str, target: Path) -> dict[str, Any]:
    r = run_cli(
        "launcher", "sync", url, str(target), "--image", "game", "--branch", "live", "--json"
    )
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def test_players_update_from_the_bucket_and_the_disk_is_only_a_cache(
    bucket_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    env = {
        "CHANGEOVER_CONTENT_BUCKET": bucket_url,
        "CHANGEOVER_S3_ENDPOINT": s3_endpoint,
        **S3_CREDENTIALS,
    }
    data = tmp_path / "server"
    srv = start_server(data, None, env=env)
    try:
        c = srv.client()
        assert c.post("/images", json={"name": "game"}).status_code == 201
        v1, v2, v3 = make_versions()
        release(c, "game", v1, "v1")
        release(c, "game", v2, "v2")
        name, prefix = bucket_url.removeprefix("s3://").split("/", 1)
        public = f"{s3_endpoint}/{name}/{prefix}"  # what a CDN would front
        target = tmp_path / "games" / "arena"

        def point(number: int) -> None:
            r = c.put("/images/game/branches/live", json={"version": str(number)})
            assert r.status_code == 200, r.text

        point(1)
        first = _sync(public, target)
        assert first["version"] == 1 and on_disk(target) == expected(v1)
        point(2)
        second = _sync(public, target)
        assert second["version"] == 2 and on_disk(target) == expected(v2)
        assert second["applied_patches"] >= 1  # the patches are in the bucket too

        # The control plane's own copy gone (a new machine, a lost disk): it reads what
        # it needs back from the bucket, for its /content as for building a version.
        shutil.rmtree(data / "store" / "content")
        manifest_id = c.get("/versions/2").json()["manifest_id"]
        served = httpx.get(f"{srv.url}/content/manifests/{manifest_id}.json", timeout=30)
        assert served.status_code == 200
        assert served.content == httpx.get(f"{public}/manifests/{manifest_id}.json").content
        release(c, "game", v3, "v3")
        point(3)
        third = _sync(public, target)
        assert third["version"] == 3 and on_disk(target) == expected(v3)
        # v3's patches were built from blobs the bucket gave back, and published there.
        v3_manifest = c.get("/versions/3").json()["manifest_id"]
        assert httpx.get(f"{public}/patches/index/{v3_manifest}.json").status_code == 200
        assert 0 < third["downloaded_bytes"] < first["downloaded_bytes"] / 2
    finally:
        stop_server(srv)
