"""Unit tests for ``changeover.content.store``: blobs, resumable uploads and manifests."""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

import changeover.content.store as store_module
from changeover.content.files import atomic_write
from changeover.content.manifest import FileEntry, Manifest
from changeover.content.store import CHUNK, LocalStore
from changeover.errors import Conflict, IntegrityError, InvalidInput, NotFound

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
EMPTY_SHA = hashlib.sha256(b"").hexdigest()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pattern(n: int, seed: bytes = b"seed") -> bytes:
    """``n`` deterministic bytes that zstd cannot compress."""
    out = bytearray()
    block = seed
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def read_blob(store: LocalStore, digest: str) -> bytes:
    return b"".join(store.open_blob(digest))


def leftovers(directory: Path) -> list[Path]:
    """Temporary files that an aborted write would leave behind."""
    return list(directory.rglob(".tmp-*"))


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def put_bytes(store: LocalStore, tmp_path: Path, data: bytes) -> str:
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    digest = sha(data)
    store.put_file(source, digest)
    return digest


# -- layout --------------------------------------------------------------------------------


def test_store_creates_its_layout_and_reopens(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "store"
    s = LocalStore(root)
    for d in ("content/blobs", "content/manifests", "uploads"):
        assert (root / d).is_dir()
    data = b"survives a reopen"
    digest = put_bytes(s, tmp_path, data)
    again = LocalStore(root)
    assert again.has(digest)
    assert read_blob(again, digest) == data


def test_blob_path_is_sharded_by_hash_prefix(store: LocalStore) -> None:
    digest = sha(b"x")
    assert store.blob_path(digest) == store.root / "content" / "blobs" / digest[:2] / digest


# -- blobs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, CHUNK, 2 * CHUNK + 17])
def test_put_file_then_open_blob_round_trips(store: LocalStore, tmp_path: Path, size: int) -> None:
    data = pattern(size)
    digest = put_bytes(store, tmp_path, data)
    chunks = list(store.open_blob(digest))
    assert b"".join(chunks) == data
    assert all(0 < len(c) <= CHUNK for c in chunks)
    store.verify_blob(digest)
    assert leftovers(store.content) == []


def test_blobs_are_zstd_compressed_on_disk(store: LocalStore, tmp_path: Path) -> None:
    data = b"the same line of a text asset, again and again\n" * 20_000  # ~1 MiB
    digest = put_bytes(store, tmp_path, data)
    on_disk = store.blob_path(digest).read_bytes()
    assert on_disk.startswith(ZSTD_MAGIC)
    assert len(on_disk) < len(data) // 10
    assert store.stored_size(digest) == len(on_disk)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(on_disk) == data


def test_has_missing_and_stored_size(store: LocalStore, tmp_path: Path) -> None:
    a, b, c = sha(b"a"), sha(b"b"), sha(b"c")
    assert not store.has(a)
    assert store.missing([c, a, b, a]) == sorted({a, b, c})
    put_bytes(store, tmp_path, b"a")
    assert store.has(a)
    assert store.missing([c, a, b, a, c]) == sorted([b, c])
    assert store.missing([a]) == []
    assert store.missing([]) == []
    assert store.stored_size(a) == store.blob_path(a).stat().st_size > 0


def test_stored_size_and_open_blob_of_an_unknown_blob(store: LocalStore) -> None:
    digest = sha(b"never stored")
    with pytest.raises(NotFound) as info:
        store.stored_size(digest)
    assert info.value.facts["sha256"] == digest
    with pytest.raises(NotFound):
        read_blob(store, digest)
    with pytest.raises(NotFound):
        store.verify_blob(digest)


def test_put_file_twice_keeps_the_first_blob(store: LocalStore, tmp_path: Path) -> None:
    digest = put_bytes(store, tmp_path, b"once")
    before = store.blob_path(digest).stat()
    put_bytes(store, tmp_path, b"once")
    after = store.blob_path(digest).stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_put_file_with_the_wrong_hash_stores_nothing(store: LocalStore, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"actual content")
    claimed = sha(b"claimed content")
    with pytest.raises(IntegrityError) as info:
        store.put_file(source, claimed)
    assert info.value.expected == claimed
    assert info.value.got == sha(b"actual content")
    assert not store.has(claimed)
    assert not store.has(sha(b"actual content"))
    assert leftovers(store.content) == []


# -- verify_blob ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(pattern(200_000), id="incompressible"),
        pytest.param(b"compressible text " * 20_000, id="compressible"),
    ],
)
def test_verify_blob_detects_flipped_bytes(store: LocalStore, tmp_path: Path, data: bytes) -> None:
    digest = put_bytes(store, tmp_path, data)
    store.verify_blob(digest)
    path = store.blob_path(digest)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    for i in range(middle, middle + 4):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError) as info:
        store.verify_blob(digest)
    assert info.value.expected == digest
    assert info.value.got != digest


def test_verify_blob_detects_a_truncated_blob(store: LocalStore, tmp_path: Path) -> None:
    digest = put_bytes(store, tmp_path, pattern(100_000))
    path = store.blob_path(digest)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(IntegrityError):
        store.verify_blob(digest)


def test_verify_blob_detects_a_blob_that_is_not_zstd(store: LocalStore, tmp_path: Path) -> None:
    digest = put_bytes(store, tmp_path, b"some content")
    store.blob_path(digest).write_bytes(b"plain bytes, no zstd frame at all")
    with pytest.raises(IntegrityError) as info:
        store.verify_blob(digest)
    assert info.value.got == "unreadable"


def test_verify_blob_detects_another_files_content(store: LocalStore, tmp_path: Path) -> None:
    good = put_bytes(store, tmp_path, b"good")
    other = put_bytes(store, tmp_path, b"other")
    os.replace(store.blob_path(other), store.blob_path(good))  # valid zstd, wrong content
    with pytest.raises(IntegrityError) as info:
        store.verify_blob(good)
    assert info.value.got == other


# -- resumable uploads ---------------------------------------------------------------------


def part_of(store: LocalStore, digest: str) -> Path:
    return store.uploads / f"{digest}.part"


def test_upload_in_several_calls_becomes_a_blob(store: LocalStore) -> None:
    data = pattern(3 * CHUNK + 123)
    digest, size = sha(data), len(data)
    assert store.upload_offset(digest) == 0
    cuts = [0, 1000, CHUNK + 5, 2 * CHUNK, size]
    for start, end in itertools.pairwise(cuts):
        piece = data[start:end]
        chunks = [piece[i : i + 4096] for i in range(0, len(piece), 4096)]
        assert store.upload_offset(digest) == start
        assert store.write_part(digest, start, chunks, size) == end
        if end < size:
            assert not store.has(digest)
            assert part_of(store, digest).stat().st_size == end
    assert store.has(digest)
    assert not part_of(store, digest).exists()
    assert store.upload_offset(digest) == 0
    assert read_blob(store, digest) == data
    store.verify_blob(digest)


def test_write_part_of_a_stored_blob_is_a_no_op(store: LocalStore, tmp_path: Path) -> None:
    digest = put_bytes(store, tmp_path, b"already here")

    def must_not_read() -> Iterator[bytes]:
        raise AssertionError("chunks read for a blob the store already has")
        yield b""  # pragma: no cover

    assert store.write_part(digest, 0, must_not_read(), 12) == 12
    assert not part_of(store, digest).exists()


@pytest.mark.parametrize("offset", [0, 3, 6, 100, -1])
def test_write_part_at_the_wrong_offset_is_a_conflict(store: LocalStore, offset: int) -> None:
    data = b"0123456789"
    digest = sha(data)
    assert store.write_part(digest, 0, [data[:5]], len(data)) == 5
    with pytest.raises(Conflict) as info:
        store.write_part(digest, offset, [data[offset:] if offset >= 0 else data], len(data))
    assert info.value.facts["offset"] == 5
    assert info.value.facts["sha256"] == digest
    assert "5" in str(info.value)
    assert part_of(store, digest).read_bytes() == data[:5]  # untouched
    assert store.write_part(digest, 5, [data[5:]], len(data)) == len(data)
    assert read_blob(store, digest) == data


def test_a_fresh_upload_must_start_at_zero(store: LocalStore) -> None:
    digest = sha(b"abc")
    with pytest.raises(Conflict) as info:
        store.write_part(digest, 1, [b"bc"], 3)
    assert info.value.facts["offset"] == 0


def test_more_bytes_than_declared_is_refused_and_rolled_back(store: LocalStore) -> None:
    data = b"exactly twenty bytes"
    digest, size = sha(data), len(data)
    assert store.write_part(digest, 0, [data[:5]], size) == 5
    # The first chunk of this call fits, the second overflows: neither may remain.
    with pytest.raises(InvalidInput, match="more than its declared 20 bytes") as info:
        store.write_part(digest, 5, [data[5:10], data[10:] + b"EXTRA"], size)
    assert info.value.facts["sha256"] == digest
    assert part_of(store, digest).read_bytes() == data[:5]
    assert store.upload_offset(digest) == 5
    assert not store.has(digest)
    # The client can carry on from where the store stands.
    assert store.write_part(digest, 5, [data[5:]], size) == size
    assert read_blob(store, digest) == data


def test_overflow_in_the_first_call_leaves_an_empty_part(store: LocalStore) -> None:
    digest = sha(b"abc")
    with pytest.raises(InvalidInput):
        store.write_part(digest, 0, [b"abcd"], 3)
    assert store.upload_offset(digest) == 0
    assert not store.has(digest)


def test_a_complete_upload_with_the_wrong_content_is_discarded(store: LocalStore) -> None:
    expected = b"the real file"
    digest = sha(expected)
    sent = b"the fake file"
    assert len(sent) == len(expected)
    assert store.write_part(digest, 0, [sent[:4]], len(expected)) == 4
    with pytest.raises(IntegrityError) as info:
        store.write_part(digest, 4, [sent[4:]], len(expected))
    assert info.value.expected == digest
    assert info.value.got == sha(sent)
    assert not store.has(digest)
    assert not part_of(store, digest).exists()
    assert store.upload_offset(digest) == 0
    assert leftovers(store.content) == []
    # A correct upload afterwards starts over from zero and succeeds.
    assert store.write_part(digest, 0, [expected], len(expected)) == len(expected)
    assert read_blob(store, digest) == expected


def test_a_zero_byte_upload_stores_the_empty_blob(store: LocalStore) -> None:
    assert store.write_part(EMPTY_SHA, 0, [], 0) == 0
    assert store.has(EMPTY_SHA)
    assert read_blob(store, EMPTY_SHA) == b""
    store.verify_blob(EMPTY_SHA)
    assert not part_of(store, EMPTY_SHA).exists()
    assert store.stored_size(EMPTY_SHA) > 0  # a valid (empty) zstd frame


def test_an_interrupted_upload_is_resumed_from_its_offset(store: LocalStore) -> None:
    data = pattern(CHUNK + 500)
    digest, size = sha(data), len(data)

    def dropped_connection() -> Iterator[bytes]:
        yield data[:700]
        yield data[700:1000]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.write_part(digest, 0, dropped_connection(), size)
    assert store.upload_offset(digest) == 1000
    assert not store.has(digest)

    offset = store.upload_offset(digest)
    assert store.write_part(digest, offset, [data[offset:]], size) == size
    assert read_blob(store, digest) == data


def test_a_part_left_by_a_killed_process_is_resumed(store: LocalStore) -> None:
    data = pattern(4000)
    digest, size = sha(data), len(data)
    # A process killed mid-upload leaves just the bytes it had written.
    part_of(store, digest).write_bytes(data[:1234])

    reopened = LocalStore(store.root)
    assert reopened.upload_offset(digest) == 1234
    with pytest.raises(Conflict) as info:
        reopened.write_part(digest, 0, [data], size)
    assert info.value.facts["offset"] == 1234
    assert reopened.write_part(digest, 1234, [data[1234:]], size) == size
    assert read_blob(reopened, digest) == data


def test_concurrent_writers_at_the_same_offset(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = pattern(3 * 65536 + 11)
    digest, size = sha(data), len(data)
    # Each writer reports when it is about to take the part's lock. The writer that gets the
    # lock does not send its bytes until both have arrived there, so the other one is
    # certainly waiting behind it (or about to): a real race, but with a fixed outcome.
    arrived = threading.Semaphore(0)

    def flock(fd: int, operation: int) -> None:
        arrived.release()
        fcntl.flock(fd, operation)

    monkeypatch.setattr(
        store_module, "fcntl", types.SimpleNamespace(flock=flock, LOCK_EX=fcntl.LOCK_EX)
    )

    def chunks() -> Iterator[bytes]:
        # Runs only in the writer holding the lock.
        for _ in range(2):
            assert arrived.acquire(timeout=30), "the other writer never reached the lock"
        for i in range(0, size, 65536):
            yield data[i : i + 65536]

    results: dict[str, Any] = {}

    def writer(name: str) -> None:
        try:
            results[name] = store.write_part(digest, 0, chunks(), size)
        except Exception as e:
            results[name] = e

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()

    outcomes = sorted(results.values(), key=lambda r: isinstance(r, Exception))
    assert outcomes[0] == size, results
    conflict = outcomes[1]
    assert isinstance(conflict, Conflict), results
    assert conflict.facts["offset"] == size  # the winner had written everything
    assert read_blob(store, digest) == data
    store.verify_blob(digest)
    assert not part_of(store, digest).exists()


def _finishing_meanwhile(action: Callable[[], None]) -> Iterator[bytes]:
    """Chunks of nothing; while the lock is held, another writer does ``action``."""
    action()
    yield from ()


def test_a_writer_racing_another_that_completes_the_same_upload(store: LocalStore) -> None:
    data = b"full upload, not yet turned into a blob"
    digest, size = sha(data), len(data)
    part = part_of(store, digest)
    part.write_bytes(data)  # writer A has sent every byte but not yet finished it

    def a_finishes() -> None:
        # What A's finishing step does: the blob appears and the part goes away.
        LocalStore(store.root).put_file(part, digest)
        part.unlink()

    # Writer B (say, a second push of the same build) also stands at the end.
    assert store.write_part(digest, size, _finishing_meanwhile(a_finishes), size) == size
    assert read_blob(store, digest) == data


def test_a_writer_whose_part_was_discarded_by_another_gets_a_conflict(store: LocalStore) -> None:
    data = b"full upload"
    digest, size = sha(data), len(data)
    part = part_of(store, digest)
    part.write_bytes(data)
    with pytest.raises(Conflict) as info:
        store.write_part(digest, size, _finishing_meanwhile(part.unlink), size)
    assert info.value.facts["offset"] == 0
    assert not store.has(digest)


# -- manifests -----------------------------------------------------------------------------


def make_manifest() -> Manifest:
    return Manifest.of(
        [
            FileEntry("bin/run", 2, sha(b"#!"), mode=0o755),
            FileEntry("data/ü.pak", 5, sha(b"12345")),
            FileEntry("bin/current", 0, sha(b"run"), mode=0o777, link="run"),
        ]
    )


def test_put_and_get_manifest(store: LocalStore) -> None:
    m = make_manifest()
    manifest_id = store.put_manifest(m)
    assert manifest_id == m.id
    path = store.content / "manifests" / f"{m.id}.json"
    assert path.read_bytes() == m.canonical_bytes()
    back = store.get_manifest(manifest_id)
    assert back == m
    assert back.id == m.id
    assert LocalStore(store.root).get_manifest(manifest_id) == m


def test_put_manifest_twice_is_idempotent(store: LocalStore) -> None:
    m = make_manifest()
    store.put_manifest(m)
    path = store.content / "manifests" / f"{m.id}.json"
    before = path.stat()
    assert store.put_manifest(Manifest.of(reversed(m.files))) == m.id
    after = path.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert leftovers(store.content) == []


def test_get_unknown_manifest_is_not_found(store: LocalStore) -> None:
    with pytest.raises(NotFound):
        store.get_manifest(sha(b"no such manifest"))


def _tamper_size(raw: bytes) -> bytes:
    doc = json.loads(raw)
    doc["files"][0]["size"] += 1
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_tamper_size, id="valid-but-different"),
        pytest.param(lambda raw: raw[:-10], id="truncated"),
        pytest.param(lambda raw: b"\x00" * len(raw), id="zeroed"),
        pytest.param(lambda raw: raw.replace(b",", b", "), id="reformatted"),
    ],
)
def test_a_tampered_manifest_file_is_an_integrity_error(
    store: LocalStore, tamper: Callable[[bytes], bytes]
) -> None:
    m = make_manifest()
    manifest_id = store.put_manifest(m)
    path = store.content / "manifests" / f"{manifest_id}.json"
    path.write_bytes(tamper(path.read_bytes()))
    with pytest.raises(IntegrityError) as info:
        store.get_manifest(manifest_id)
    assert info.value.expected == manifest_id
    assert info.value.got != manifest_id


def test_a_manifest_under_another_manifests_name_is_an_integrity_error(
    store: LocalStore,
) -> None:
    a = make_manifest()
    b = Manifest.of([FileEntry("other", 1, sha(b"o"))])
    store.put_manifest(a)
    store.put_manifest(b)
    content = store.content / "manifests"
    os.replace(content / f"{b.id}.json", content / f"{a.id}.json")
    with pytest.raises(IntegrityError) as info:
        store.get_manifest(a.id)
    assert info.value.got == b.id


# -- bad hashes ----------------------------------------------------------------------------

BAD_IDS = ["", "abc", "../../etc/passwd", sha(b"x").upper(), sha(b"x") + "/../x", "g" * 64]


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s, h: s.blob_path(h), id="blob_path"),
        pytest.param(lambda s, h: s.has(h), id="has"),
        pytest.param(lambda s, h: s.missing([sha(b"ok"), h]), id="missing"),
        pytest.param(lambda s, h: s.stored_size(h), id="stored_size"),
        pytest.param(lambda s, h: b"".join(s.open_blob(h)), id="open_blob"),
        pytest.param(lambda s, h: s.verify_blob(h), id="verify_blob"),
        pytest.param(lambda s, h: s.upload_offset(h), id="upload_offset"),
        pytest.param(lambda s, h: s.write_part(h, 0, [b"x"], 1), id="write_part"),
        pytest.param(lambda s, h: s.get_manifest(h), id="get_manifest"),
    ],
)
def test_a_bad_sha_string_is_invalid_input(
    store: LocalStore, bad: str, call: Callable[[LocalStore, str], object]
) -> None:
    with pytest.raises(InvalidInput):
        call(store, bad)
    assert list(store.uploads.iterdir()) == []


def test_put_file_with_a_bad_sha_is_invalid_input(store: LocalStore, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    with pytest.raises(InvalidInput):
        store.put_file(source, "../../escape")


# -- atomic_write --------------------------------------------------------------------------


def test_atomic_write_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.json"
    atomic_write(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert leftovers(tmp_path) == []
