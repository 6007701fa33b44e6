"""Unit tests for ``changeover.content.chunks`` and the chunk hashes of the delivery index."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from changeover.content.chunks import (
    MIN_CHUNK_BYTES,
    ChunkHasher,
    ChunkHashes,
    chunk_count,
    hash_chunks,
    hash_range,
)
from changeover.content.delivery import DeliveryIndex, build_index
from changeover.content.manifest import FileEntry, Manifest
from changeover.content.publish import PatchIndex
from changeover.content.store import LocalStore
from changeover.errors import IntegrityError, InvalidInput

CB = MIN_CHUNK_BYTES


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def test_lookup_checks_the_count() -> None:
    chunks = ChunkHashes(CB, {"a" * 64: ("b" * 64, "c" * 64)})
    assert chunks.for_content("a" * 64, CB + 1) == ("b" * 64, "c" * 64)
    assert chunks.for_content("a" * 64, 3 * CB) is None  # inconsistent: hash whole instead
    assert chunks.for_content("d" * 64, CB) is None


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
    ],
)
def test_malformed_chunk_hashes_are_refused(doc: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        ChunkHashes.from_dict(doc)


def test_delivery_index_carries_chunk_hashes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    rng = random.Random(2)
    big, small = rng.randbytes(2 * CB + 3), rng.randbytes(1000)
    entries = []
    for name, data in (("big.pak", big), ("small.txt", small)):
        src = tmp_path / name
        src.write_bytes(data)
        store.put_file(src, sha(data))
        entries.append(FileEntry(name, len(data), sha(data)))
    manifest = Manifest.of(entries)
    index = build_index(store, manifest, chunk_bytes=CB, chunked_from=2 * CB)
    assert dict(index.chunks.hashes) == {sha(big): expected_chunks(big)}
    again = DeliveryIndex.from_bytes(index.to_bytes())
    assert again.chunks == index.chunks
    assert again.chunks.chunk_bytes == CB
    # Without big contents the index is what it always was: no chunk keys at all.
    plain = build_index(store, manifest, chunked_from=10 * CB)
    assert b"chunk" not in plain.to_bytes()
    assert not DeliveryIndex.from_bytes(plain.to_bytes()).chunks


def test_delivery_index_refuses_chunks_of_unknown_content() -> None:
    m = "a" * 64
    index = DeliveryIndex(
        m, {"b" * 64: 10}, PatchIndex(m, {}), ChunkHashes(CB, {"c" * 64: ("d" * 64,)})
    )
    with pytest.raises(InvalidInput):
        DeliveryIndex.from_bytes(index.to_bytes())
