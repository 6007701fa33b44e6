"""Unit tests for ``changeover.content.chunks`` and the chunk hashes of the delivery index."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import blake3
import pytest

from changeover.content.chunks import (
    MIN_CHUNK_BYTES,
    ChunkHasher,
    ChunkHashes,
    chunk_count,
    hash_chunks,
    hash_content,
    hash_range,
)
from changeover.content.delivery import DeliveryIndex, build_index
from changeover.content.manifest import FileEntry, Manifest
from changeover.content.patch_index import PatchIndex
from changeover.content.store import LocalStore
from changeover.errors import IntegrityError, InvalidInput

CB = MIN_CHUNK_BYTES


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def expected_chunks(data: bytes, size: int = CB) -> tuple[str, ...]:
    return tuple(sha(data[i : i + size]) for i in range(0, max(1, len(data)), size))


@pytest.mark.parametrize("length", [0, 1, CB - 1, CB, CB + 1, 3 * CB, 3 * CB + 17])
def test_hasher_matches_hashlib_whatever_the_pieces(length: int) -> None:
    rng = random.Random(length)
    data = rng.randbytes(length)
    hasher = ChunkHasher(CB)
    pos = 0
    while pos < length:  # uneven pieces that straddle chunk boundaries
        n = rng.randint(1, CB // 3)
        hasher.update(data[pos : pos + n])
        pos += n
    whole, chunks = hasher.finish()
    assert whole == sha(data)
    assert chunks == expected_chunks(data)
    assert len(chunks) == chunk_count(length, CB)
    assert hasher.blake3_hexdigest() == b3(data)


def test_hash_content_without_chunks() -> None:
    data = random.Random(5).randbytes(2 * CB + 1)
    assert hash_content([data], sha(data), CB, chunked=False) == ((), b3(data))
    assert hash_content([data[:7], data[7:]], sha(data), CB) == (expected_chunks(data), b3(data))
    with pytest.raises(IntegrityError):
        hash_content([data], sha(b"other"), CB, chunked=False)


def test_hash_chunks_refuses_other_content() -> None:
    data = bytes(CB + 5)
    assert hash_chunks([data], sha(data), CB) == expected_chunks(data)
    with pytest.raises(IntegrityError):
        hash_chunks([data], sha(b"other"), CB)


def test_hash_range(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(3 * CB + 100)
    p = tmp_path / "f"
    p.write_bytes(data)
    assert hash_range(p, CB, CB) == sha(data[CB : 2 * CB])
    assert hash_range(p, 3 * CB, CB) == sha(data[3 * CB :])  # the short last chunk
    assert hash_range(p, 0, len(data), bytearray(4096)) == sha(data)
    assert hash_range(p, 0, len(data), algorithm="blake3") == b3(data)
    assert hash_range(p, CB, CB, bytearray(4096), algorithm="blake3") == b3(data[CB : 2 * CB])
    assert hash_range(p, 0, len(data) + 5, algorithm="blake3") == b3(data)  # shorter file
    with pytest.raises(InvalidInput):
        hash_range(p, 0, 1, algorithm="md5")


def test_lookup_checks_the_count() -> None:
    chunks = ChunkHashes(CB, {"a" * 64: ("b" * 64, "c" * 64)})
    assert chunks.for_content("a" * 64, CB + 1) == ("b" * 64, "c" * 64)
    assert chunks.for_content("a" * 64, 3 * CB) is None  # inconsistent: hash whole instead
    assert chunks.for_content("d" * 64, CB) is None


def test_blake3_lookup_and_restriction() -> None:
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    hashes = ChunkHashes(CB, {a: ("1" * 64,)}, {a: "2" * 64, b: "3" * 64})
    assert hashes.blake3_of(b) == "3" * 64
    assert hashes.blake3_of(c) is None
    assert hashes.contents() == {a, b}
    only_b = hashes.restricted([b, c])
    assert only_b == ChunkHashes(CB, {}, {b: "3" * 64})
    assert only_b.to_dict() == {"blake3": {b: "3" * 64}}  # no chunk keys without chunks
    # Without chunks their size is not written, nor needed.
    assert ChunkHashes.from_dict(only_b.to_dict()) == ChunkHashes(blake3_hashes={b: "3" * 64})
    assert ChunkHashes.from_dict(hashes.to_dict()) == hashes
    assert not hashes.restricted([c])


@pytest.mark.parametrize(
    "doc",
    [
        {"chunk_bytes": 100, "chunks": {}},
        {"chunk_bytes": True, "chunks": {}},
        {"chunk_bytes": CB, "chunks": []},
        {"chunk_bytes": CB, "chunks": {"zz": ["a" * 64]}},
        {"chunk_bytes": CB, "chunks": {"a" * 64: []}},
        {"chunk_bytes": CB, "chunks": {"a" * 64: ["not a hash"]}},
        {"chunks": {"a" * 64: ["b" * 64]}},
        {},
        {"chunk_bytes": CB},
        {"blake3": []},
        {"blake3": {"zz": "b" * 64}},
        {"blake3": {"a" * 64: "B" * 64}},
        {"blake3": {"a" * 64: "b" * 63}},
        {"blake3": {"a" * 64: 5}},
        {"blake3": {"a" * 64: "g" * 64}},
        {"blake3": {"a" * 64: "b" * 64}, "chunk_bytes": True},
        {"blake3": {"a" * 64: "b" * 64}, "chunks": {"a" * 64: ["b" * 64]}},
    ],
)
def test_malformed_chunk_hashes_are_refused(doc: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        ChunkHashes.from_dict(doc)


def test_delivery_index_carries_chunk_and_blake3_hashes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    rng = random.Random(2)
    big, small, empty = rng.randbytes(2 * CB + 3), rng.randbytes(1000), b""
    entries = []
    for name, data in (("big.pak", big), ("small.txt", small), ("empty", empty)):
        src = tmp_path / name
        src.write_bytes(data)
        store.put_file(src, sha(data))
        entries.append(FileEntry(name, len(data), sha(data)))
    entries.append(FileEntry("link", 0, sha(b"big.pak"), link="big.pak"))
    manifest = Manifest.of(entries)
    index = build_index(store, manifest, chunk_bytes=CB, chunked_from=2 * CB, workers=2)
    assert dict(index.chunks.hashes) == {sha(big): expected_chunks(big)}
    assert dict(index.chunks.blake3_hashes) == {sha(d): b3(d) for d in (big, small, empty)}
    again = DeliveryIndex.from_bytes(index.to_bytes())
    assert again.chunks == index.chunks
    assert again.chunks.chunk_bytes == CB
    # Without big contents: BLAKE3 digests only, no chunk keys.
    no_big = build_index(store, manifest, chunked_from=10 * CB)
    assert b"chunk" not in no_big.to_bytes()
    assert DeliveryIndex.from_bytes(no_big.to_bytes()).chunks == ChunkHashes(
        blake3_hashes=index.chunks.blake3_hashes
    )
    # An index made before BLAKE3 (or before both) still reads; hosts then use SHA-256.
    old = build_index(store, manifest, chunk_bytes=CB, chunked_from=2 * CB, with_blake3=False)
    assert b"blake3" not in old.to_bytes()
    assert DeliveryIndex.from_bytes(old.to_bytes()).chunks == ChunkHashes(CB, index.chunks.hashes)
    plain = build_index(store, manifest, chunked_from=10 * CB, with_blake3=False)
    assert b"chunk" not in plain.to_bytes()
    assert b"blake3" not in plain.to_bytes()
    assert not DeliveryIndex.from_bytes(plain.to_bytes()).chunks


def test_delivery_index_refuses_a_corrupt_blob(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    data = b"x" * 5000
    src = tmp_path / "f"
    src.write_bytes(data)
    store.put_file(src, sha(data))
    # The stored blob now decompresses to other bytes: no BLAKE3 of them may be published.
    other = tmp_path / "g"
    other.write_bytes(b"y" * 5000)
    blob = store.blob_path(sha(data))
    blob.chmod(0o644)
    other_store = LocalStore(tmp_path / "other")
    other_store.put_file(other, sha(b"y" * 5000))
    blob.write_bytes(other_store.blob_path(sha(b"y" * 5000)).read_bytes())
    manifest = Manifest.of([FileEntry("f", len(data), sha(data))])
    with pytest.raises(IntegrityError):
        build_index(store, manifest)


@pytest.mark.parametrize("key", ["chunks", "blake3"])
def test_delivery_index_refuses_hashes_of_unknown_content(key: str) -> None:
    m = "a" * 64
    unknown = (
        ChunkHashes(CB, {"c" * 64: ("d" * 64,)})
        if key == "chunks"
        else ChunkHashes(CB, {}, {"c" * 64: "d" * 64})
    )
    index = DeliveryIndex(m, {"b" * 64: 10}, PatchIndex(m, {}), unknown)
    with pytest.raises(InvalidInput):
        DeliveryIndex.from_bytes(index.to_bytes())
