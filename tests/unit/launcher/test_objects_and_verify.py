"""Unit tests for the launcher's object writer and its chunk-parallel ``verify``."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from changeover.content.chunks import MIN_CHUNK_BYTES, ChunkHashes
from changeover.content.manifest import FileEntry, Manifest
from changeover.errors import IntegrityError
from changeover.launcher.install import Install, verify_tree
from changeover.launcher.objects import ObjectStore

CB = MIN_CHUNK_BYTES


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(objects: ObjectStore, data: bytes, executable: bool = False) -> None:
    with objects.writer(sha(data), len(data), executable) as w:
        for i in range(0, len(data), 100_000):
            w.write(data[i : i + 100_000])


def test_writer_stores_exactly_the_promised_content(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path / "objects")
    data = random.Random(1).randbytes(300_001)
    put(objects, data, executable=True)
    path = objects.path(sha(data), True)
    assert path.read_bytes() == data
    assert os.stat(path).st_mode & 0o777 == 0o555


@pytest.mark.parametrize("bad", ["other", "short", "long"])
def test_writer_leaves_nothing_on_a_mismatch(tmp_path: Path, bad: str) -> None:
    objects = ObjectStore(tmp_path / "objects")
    data = b"x" * 1000
    with pytest.raises(IntegrityError), objects.writer(sha(data), len(data), False) as w:
        w.write({"other": b"y" * 1000, "short": b"x" * 999, "long": b"x" * 1001}[bad])
    assert not objects.has(sha(data), False)
    assert not [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]


def test_writer_leaves_nothing_on_an_error(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path / "objects")
    data = b"x" * 1000

    def fail_midway() -> None:
        with objects.writer(sha(data), len(data), False) as w:
            w.write(data[:10])
            raise RuntimeError("decoder failed")

    with pytest.raises(RuntimeError):
        fail_midway()
    assert not [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]


def make_install(tmp_path: Path) -> tuple[Install, Manifest, bytes, ChunkHashes]:
    rng = random.Random(3)
    big = rng.randbytes(3 * CB + 999)
    small = b"hello\n"
    objects = ObjectStore(tmp_path / "cache" / "objects")
    put(objects, big)
    put(objects, small)
    manifest = Manifest.of(
        [FileEntry("data/big.pak", len(big), sha(big)), FileEntry("a.txt", len(small), sha(small))]
    )
    chunks = ChunkHashes(
        CB, {sha(big): tuple(sha(big[i : i + CB]) for i in range(0, len(big), CB))}
    )
    install = Install(tmp_path / "game", tmp_path / "cache")
    tree = install.build_tree(manifest, objects, chunks)
    install.switch(tree, {"image": "game"})
    return install, manifest, big, chunks


def test_tree_keeps_its_chunk_hashes(tmp_path: Path) -> None:
    install, manifest, _, chunks = make_install(tmp_path)
    assert install.current_chunks() == chunks
    report = verify_tree(install.target, manifest, install.current_chunks())
    assert report.clean and report.ok == 2
    install.cleanup()  # the current tree's sidecars stay
    assert install.current_chunks() == chunks


@pytest.mark.parametrize("use_chunks", [True, False])
@pytest.mark.parametrize("where", [0, CB + 5, 3 * CB + 998])
def test_verify_finds_one_flipped_byte_in_any_chunk(
    tmp_path: Path, use_chunks: bool, where: int
) -> None:
    install, manifest, big, chunks = make_install(tmp_path)
    target = install.target / "data" / "big.pak"
    os.chmod(target, 0o644)
    with open(target, "r+b") as f:
        f.seek(where)
        f.write(bytes([big[where] ^ 1]))
    report = verify_tree(install.target, manifest, chunks if use_chunks else None)
    assert report.modified == ["data/big.pak"]
    assert report.ok == 1


def test_inconsistent_chunk_hashes_fall_back_to_the_whole_file(tmp_path: Path) -> None:
    install, manifest, big, _ = make_install(tmp_path)
    wrong = ChunkHashes(CB, {sha(big): ("0" * 64,)})  # wrong count: not trusted, not used
    assert verify_tree(install.target, manifest, wrong).clean
