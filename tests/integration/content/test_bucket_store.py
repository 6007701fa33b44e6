"""The content store with its tree in an S3-compatible bucket (a real S3-protocol server on
loopback, ``s3_endpoint``): what one store writes is in the bucket before the call
returns, byte for byte, readable anonymously at the bucket's public URL; another store
with an empty disk reads it all through the bucket; big files go in parts."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import httpx
import pytest

from changeover.content.bucket import MULTIPART_FROM, Bucket, BucketConfig
from changeover.content.manifest import FileEntry, Manifest
from changeover.content.store import LocalStore, blob_rel
from changeover.errors import InvalidInput, NotFound, RemoteError
from s3_helpers import S3_CREDENTIALS

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def bucket(bucket_url: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return Bucket(BucketConfig.parse(bucket_url, s3_endpoint))


def _public(bucket: Bucket, s3_endpoint: str, rel: str) -> httpx.Response:
    """``rel`` as a launcher would fetch it: anonymously, from the bucket's URL."""
    return httpx.get(f"{s3_endpoint}/{bucket.config.name}/{bucket.key(rel)}", timeout=30)


def test_what_a_store_writes_is_in_the_bucket_and_another_store_reads_it(
    bucket: Bucket, s3_endpoint: str, tmp_path: Path
) -> None:
    writer = LocalStore(tmp_path / "a", bucket)
    files = {f"f{i}": random.Random(i).randbytes(1000 + i) for i in range(5)}
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    assert writer.put_blobs([(hashes[n], files[n]) for n in files]) == [None] * len(files)
    # A resumable upload too, in two turns.
    data = random.Random(9).randbytes(300_000)
    sha = hashlib.sha256(data).hexdigest()
    assert writer.write_part(sha, 0, [data[:100_000]], len(data)) == 100_000
    assert not bucket.exists(blob_rel(sha))  # half an upload is nowhere to be seen
    assert writer.write_part(sha, 100_000, [data[100_000:]], len(data)) == len(data)
    manifest = Manifest(
        tuple(FileEntry(path=n, size=len(files[n]), sha256=hashes[n]) for n in sorted(files))
    )
    writer.put_manifest(manifest)
    for h in [*hashes.values(), sha]:
        r = _public(bucket, s3_endpoint, blob_rel(h))
        assert r.status_code == 200
        assert r.content == writer.blob_path(h).read_bytes()

    reader = LocalStore(tmp_path / "b", bucket)  # a replica with an empty disk
    assert not reader.blob_path(sha).exists()
    assert reader.has(sha) and reader.missing([sha, "0" * 64]) == ["0" * 64]
    assert b"".join(reader.open_blob(sha)) == data
    assert reader.raw_size(sha) == len(data)
    assert reader.get_manifest(manifest.id) == manifest
    # A file that changes in place is read afresh: another replica may have rewritten it.
    writer.write_content("metadata/timestamp.json", b"v1")
    assert reader.local("metadata/timestamp.json").read_bytes() == b"v1"
    writer.write_content("metadata/timestamp.json", b"v2")
    assert reader.local("metadata/timestamp.json").read_bytes() == b"v2"
    # Private files (inputs to publishing) are shared too, but not under the public tree.
    writer.put_private("delivery/x.json", b"{}")
    assert reader.get_private("delivery/x.json") == b"{}"
    assert _public(bucket, s3_endpoint, "delivery/x.json").status_code in (403, 404)
    assert bucket.key(Bucket.private("delivery/x.json")) == "_private/game-content/delivery/x.json"
    with pytest.raises(NotFound):
        b"".join(reader.open_blob("1" * 64))
    with pytest.raises(InvalidInput):
        b"".join(reader.open_blob("../../etc/passwd"))


def test_a_big_file_goes_in_parts_and_a_removed_one_goes(
    bucket: Bucket, s3_endpoint: str, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "a", bucket)
    big = random.Random(1).randbytes(MULTIPART_FROM + (3 << 20))  # incompressible
    store.write_content("patches/big.bin", big)
    head = httpx.head(f"{s3_endpoint}/{bucket.config.name}/{bucket.key('patches/big.bin')}")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(big)
    assert head.headers["etag"].strip('"').endswith("-2")  # a multipart upload of 2 parts
    assert _public(bucket, s3_endpoint, "patches/big.bin").content == big
    store.write_content("news/game/live.xml", b"<feed/>")
    assert _public(bucket, s3_endpoint, "news/game/live.xml").status_code == 200
    store.remove_content("news/game/live.xml")
    assert _public(bucket, s3_endpoint, "news/game/live.xml").status_code in (403, 404)


def test_a_bucket_that_cannot_be_reached_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    dead = Bucket(BucketConfig.parse("s3://nowhere/x", "http://127.0.0.1:9"))
    store = LocalStore(tmp_path, dead)
    with pytest.raises(RemoteError, match="in bucket nowhere"):
        store.write_content("metadata/timestamp.json", b"{}")


@pytest.mark.parametrize(
    "url", ["", "s3://", "http://bucket/x", "s3://bucket/x?y=1", "bucket/prefix"]
)
def test_bad_bucket_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match="s3://name/prefix"):
        BucketConfig.parse(url)


def test_bucket_urls_parse() -> None:
    assert BucketConfig.parse("s3://b") == BucketConfig("b", "", None)
    assert BucketConfig.parse("s3://b/a/c/", "http://h:9") == BucketConfig(
        "b", "a/c/", "http://h:9"
    )
