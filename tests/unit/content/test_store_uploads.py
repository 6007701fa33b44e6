"""Unit tests for the fast upload paths of ``changeover.content.store``.

``put_blobs`` (many small files at once) and ``open_upload`` (one writer's turn at a
resumable upload, hashed and compressed while the bytes arrive); the resumable semantics
shared with ``write_part`` are in ``test_store.py``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import zstandard

import changeover.content.store as store_module
from changeover.content.store import LocalStore
from changeover.errors import Conflict, IntegrityError, InvalidInput


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_blob(store: LocalStore, digest: str) -> bytes:
    return b"".join(store.open_blob(digest))


def leftovers(store: LocalStore) -> list[Path]:
    return list(store.content.rglob(".tmp-*"))


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


# -- put_blobs -----------------------------------------------------------------------------


def test_put_blobs_stores_each_file_with_its_size_in_the_header(store: LocalStore) -> None:
    files = [b"", b"x", b"text " * 5000, os.urandom(70_000)]
    results = store.put_blobs([(sha(d), d) for d in files])
    assert results == [None] * len(files)
    for d in files:
        assert read_blob(store, sha(d)) == d
        assert store.raw_size(sha(d)) == len(d)
        store.verify_blob(sha(d))
        assert oct(store.blob_path(sha(d)).stat().st_mode & 0o777) == "0o644"
    assert leftovers(store) == []


def test_put_blobs_refuses_a_lying_item_alone(store: LocalStore) -> None:
    good1, good2, real = b"first file", b"second file", b"what the hash promises"
    lie = b"something else entirely"
    results = store.put_blobs([(sha(good1), good1), (sha(real), lie), (sha(good2), good2)])
    assert results[0] is None
    assert results[2] is None
    refused = results[1]
    assert isinstance(refused, IntegrityError)
    assert (refused.expected, refused.got) == (sha(real), sha(lie))
    assert read_blob(store, sha(good1)) == good1
    assert read_blob(store, sha(good2)) == good2
    assert not store.has(sha(real))
    assert not store.has(sha(lie))
    assert leftovers(store) == []
    assert list(store.uploads.iterdir()) == []


def test_put_blobs_keeps_blobs_already_there_and_takes_duplicates(store: LocalStore) -> None:
    data = b"already stored"
    assert store.put_blobs([(sha(data), data)]) == [None]
    before = store.blob_path(sha(data)).stat()
    other = b"new"
    assert store.put_blobs([(sha(data), data), (sha(other), other), (sha(other), other)]) == [
        None,
        None,
        None,
    ]
    after = store.blob_path(sha(data)).stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert read_blob(store, sha(other)) == other


def test_put_blobs_with_a_bad_hash_stores_nothing(store: LocalStore) -> None:
    with pytest.raises(InvalidInput):
        store.put_blobs([(sha(b"ok"), b"ok"), ("../../escape", b"x")])
    assert not store.has(sha(b"ok"))
    assert leftovers(store) == []


def test_put_blobs_makes_every_blob_durable_before_any_is_visible(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [f"file {i}".encode() for i in range(20)]
    events: list[tuple[str, str]] = []
    real_fsync_all, real_replace = store_module._fsync_all, os.replace

    def fsync_all(paths: object) -> None:
        todo = list(paths)  # type: ignore[call-overload]
        events.extend(("fsync", str(p)) for p in todo)
        real_fsync_all(todo)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append(("rename", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(store_module, "_fsync_all", fsync_all)
    monkeypatch.setattr(store_module.os, "replace", replace)
    store.put_blobs([(sha(d), d) for d in files])
    kinds = [k for k, _ in events]
    renames = [i for i, k in enumerate(kinds) if k == "rename"]
    syncs = [i for i, k in enumerate(kinds) if k == "fsync"]
    assert len(renames) == len(files)
    # Each temporary file was fsynced before the first rename, and each touched directory
    # after the last one.
    assert sum(1 for i in syncs if i < renames[0]) == len(files)
    synced_dirs = {p for i, (k, p) in enumerate(events) if k == "fsync" and i > renames[-1]}
    assert synced_dirs == {str(store.blob_path(sha(d)).parent) for d in files}


def test_a_failed_write_in_a_batch_leaves_no_temporary_files(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(paths: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(store_module, "_fsync_all", broken)
    files = [b"a", b"b", b"c"]
    with pytest.raises(OSError, match="disk on fire"):
        store.put_blobs([(sha(d), d) for d in files])
    assert leftovers(store) == []
    assert not any(store.has(sha(d)) for d in files)


# -- open_upload ---------------------------------------------------------------------------


def test_an_upload_in_one_turn_is_stored_in_one_pass(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * store_module.CHUNK + 5)
    digest = sha(data)

    def no_second_pass(*_: object) -> None:
        raise AssertionError("the part was read again")

    monkeypatch.setattr(LocalStore, "_store_stream", no_second_pass)
    up = store.open_upload(digest, 0, len(data))
    assert up.active
    part = store.uploads / f"{digest}.part"
    up.write([data[:1000], data[1000 : 2 * store_module.CHUNK]])
    assert part.stat().st_size == 2 * store_module.CHUNK  # resumable at any moment
    assert not store.has(digest)
    up.write([data[2 * store_module.CHUNK :]])
    assert up.close() == len(data)
    assert not up.active
    assert read_blob(store, digest) == data
    assert store.raw_size(digest) == len(data)
    assert not part.exists()
    assert leftovers(store) == []


def test_a_big_blob_gets_a_multithreaded_compressor_and_keeps_its_size(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "ZSTD_THREADS_FROM", 1000)
    monkeypatch.setattr(store_module, "ZSTD_THREADS", 2)
    monkeypatch.setattr(store_module, "WRITEBACK_EVERY", 10_000)
    data = b"compressible " * 100_000
    digest = sha(data)
    assert store.write_part(
        digest, 0, [data[i : i + 65536] for i in range(0, len(data), 65536)], len(data)
    ) == len(data)
    header = store.blob_path(digest).read_bytes()[:18]
    assert zstandard.frame_content_size(header) == len(data)
    assert read_blob(store, digest) == data


def test_an_aborted_turn_keeps_what_arrived_and_drops_the_compressed_copy(
    store: LocalStore,
) -> None:
    data = os.urandom(200_000)
    digest = sha(data)
    up = store.open_upload(digest, 0, len(data))
    up.write([data[:50_000]])
    up.abort()
    up.abort()  # idempotent
    assert store.upload_offset(digest) == 50_000
    assert leftovers(store) == []
    up = store.open_upload(digest, 50_000, len(data))
    up.write([data[50_000:]])
    assert up.close() == len(data)
    assert read_blob(store, digest) == data


def test_a_lying_turn_in_one_pass_leaves_nothing(store: LocalStore) -> None:
    real, lie = b"the real content", b"a fake content!!"
    assert len(real) == len(lie)
    up = store.open_upload(sha(real), 0, len(real))
    up.write([lie])
    with pytest.raises(IntegrityError):
        up.close()
    assert not store.has(sha(real))
    assert store.upload_offset(sha(real)) == 0
    assert list(store.uploads.iterdir()) == []
    assert leftovers(store) == []


def test_too_many_bytes_in_one_pass_leave_nothing(store: LocalStore) -> None:
    data = b"twelve bytes"
    up = store.open_upload(sha(data), 0, len(data))
    with pytest.raises(InvalidInput, match="more than its declared"):
        up.write([data, b"more"])
    assert not up.active
    assert list(store.uploads.iterdir()) == []
    assert leftovers(store) == []


def test_a_second_writer_that_will_not_wait_gets_a_conflict(store: LocalStore) -> None:
    data = os.urandom(10_000)
    digest = sha(data)
    first = store.open_upload(digest, 0, len(data))
    first.write([data[:4000]])
    with pytest.raises(Conflict) as info:
        store.open_upload(digest, 0, len(data), wait=False)
    assert "in progress" in str(info.value)
    first.abort()
    second = store.open_upload(digest, 4000, len(data), wait=False)
    second.write([data[4000:]])
    assert second.close() == len(data)
    assert read_blob(store, digest) == data


def test_an_upload_of_a_blob_stored_meanwhile_is_complete(store: LocalStore) -> None:
    data = b"stored by a batch while a stream had started"
    digest = sha(data)
    up = store.open_upload(digest, 0, len(data))
    up.write([data[:10]])
    up.abort()
    store.put_blobs([(digest, data)])
    again = store.open_upload(digest, 10, len(data))
    assert not again.active
    assert again.offset == len(data)
    assert store.write_part(digest, 0, [b"not read"], len(data)) == len(data)
    assert read_blob(store, digest) == data


def test_write_after_close_is_refused(store: LocalStore) -> None:
    data = b"abc"
    up = store.open_upload(sha(data), 0, 3)
    up.write([b"ab"])
    assert up.close() == 2
    with pytest.raises(InvalidInput, match="closed"):
        up.write([b"c"])
    assert store.upload_offset(sha(data)) == 2
