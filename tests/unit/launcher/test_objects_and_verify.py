"""Unit tests for the launcher's object writer and its ``verify`` (BLAKE3, chunk-parallel
SHA-256, whole SHA-256), including what a damaged or tampered sidecar can and cannot do."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import pytest
import zstandard

from changeover.content.chunks import MIN_CHUNK_BYTES, ChunkHashes
from changeover.content.manifest import FileEntry, Manifest
from changeover.errors import IntegrityError
from changeover.launcher import install as install_module
from changeover.launcher.install import Install, verify_tree
from changeover.launcher.objects import ObjectStore

CB = MIN_CHUNK_BYTES


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


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


@pytest.mark.parametrize("how", ["writer", "zstd blob", "file"])
def test_a_signed_blake3_checks_an_object_in_place_of_its_sha256(tmp_path: Path, how: str) -> None:
    # What a sync does when the signed delivery index lists BLAKE3s: the SHA-256 is not
    # computed at all. Content that matches the BLAKE3 is stored; content that does not is
    # refused, even when it is exactly what the name's SHA-256 promises (the index, signed
    # like the manifest, binds the two digests to one content).
    objects = ObjectStore(tmp_path / "objects")
    good, other = b"good content\n" * 50, b"evil content\n" * 50
    src = tmp_path / "src"

    def add(content: bytes, digest: str) -> None:
        if how == "writer":
            with objects.writer(sha(good), len(good), False, blake3=digest) as w:
                w.write(content)
        elif how == "zstd blob":
            src.write_bytes(zstandard.ZstdCompressor().compress(content))
            objects.add_from_zstd(src, sha(good), len(good), False, blake3=digest)
        else:
            src.write_bytes(content)
            objects.add_from_file(src, sha(good), len(good), False, blake3=digest)

    with pytest.raises(IntegrityError):
        add(good, b3(other))
    with pytest.raises(IntegrityError):
        add(good[:-1], b3(good[:-1]))  # matches the digest given, but not the size
    assert not [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]
    add(good, b3(good))
    assert objects.path(sha(good), False).read_bytes() == good


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


SMALL = b"hello\n"
TWIN = b"world\n"  # same size as SMALL, other content


def make_install(
    tmp_path: Path, *, with_blake3: bool = False
) -> tuple[Install, Manifest, bytes, ChunkHashes]:
    rng = random.Random(3)
    big = rng.randbytes(3 * CB + 999)
    objects = ObjectStore(tmp_path / "cache" / "objects")
    for data in (big, SMALL, TWIN):
        put(objects, data)
    manifest = Manifest.of(
        [
            FileEntry("data/big.pak", len(big), sha(big)),
            FileEntry("a.txt", len(SMALL), sha(SMALL)),
            FileEntry("b.txt", len(TWIN), sha(TWIN)),
        ]
    )
    whole = {sha(d): b3(d) for d in (big, SMALL, TWIN)} if with_blake3 else {}
    # Also an entry for a content this manifest lacks: the sidecar must leave it out.
    whole_more = {**whole, "e" * 64: "f" * 64} if whole else {}
    chunks = ChunkHashes(
        CB, {sha(big): tuple(sha(big[i : i + CB]) for i in range(0, len(big), CB))}, whole
    )
    install = Install(tmp_path / "game", tmp_path / "cache")
    given = ChunkHashes(CB, chunks.hashes, whole_more)
    tree = install.build_tree(manifest, objects, given)
    install.switch(tree, {"image": "game"})
    return install, manifest, big, chunks


def sidecar(install: Install) -> Path:
    tree = install.current_tree()
    assert tree is not None
    return tree.parent / f"{tree.name}.chunks.json"


def rewrite_sidecar(install: Install, edit: Callable[[dict[str, Any]], None]) -> None:
    path = sidecar(install)
    doc = json.loads(path.read_bytes())
    edit(doc)
    path.write_text(json.dumps(doc))


def flip(path: Path, where: int) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(where)
        byte = f.read(1)
        f.seek(where)
        f.write(bytes([byte[0] ^ 1]))


def algorithms_used(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the algorithm of every hash ``verify_tree`` computes."""
    used: list[str] = []
    real = install_module.hash_range

    def spy(*args: Any, algorithm: str = "sha256") -> str:
        used.append(algorithm)
        return real(*args, algorithm=algorithm)

    monkeypatch.setattr(install_module, "hash_range", spy)
    return used


def test_tree_keeps_its_chunk_hashes(tmp_path: Path) -> None:
    install, manifest, _, chunks = make_install(tmp_path)
    assert install.current_chunks() == chunks
    report = verify_tree(install.target, manifest, install.current_chunks())
    assert report.clean and report.ok == 3
    install.cleanup()  # the current tree's sidecars stay
    assert install.current_chunks() == chunks


def test_tree_keeps_its_blake3_digests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install, manifest, _, chunks = make_install(tmp_path, with_blake3=True)
    kept = install.current_chunks()
    assert kept == chunks  # only this manifest's contents
    assert "e" * 64 not in json.loads(sidecar(install).read_bytes())["blake3"]
    used = algorithms_used(monkeypatch)
    report = verify_tree(install.target, manifest, kept)
    assert report.clean and report.ok == 3
    assert used == ["blake3"] * 3  # one whole-file BLAKE3 each; no chunk, no SHA-256


@pytest.mark.parametrize("use", ["blake3", "chunks", "sha256"])
@pytest.mark.parametrize("where", [0, CB + 5, 3 * CB + 998])
def test_verify_finds_one_flipped_byte_in_any_chunk(tmp_path: Path, use: str, where: int) -> None:
    install, manifest, _, chunks = make_install(tmp_path, with_blake3=use == "blake3")
    flip(install.target / "data" / "big.pak", where)
    report = verify_tree(install.target, manifest, chunks if use != "sha256" else None)
    assert report.modified == ["data/big.pak"]
    assert report.ok == 2


def test_inconsistent_chunk_hashes_fall_back_to_the_whole_file(tmp_path: Path) -> None:
    install, manifest, big, _ = make_install(tmp_path)
    wrong = ChunkHashes(CB, {sha(big): ("0" * 64,)})  # wrong count: not trusted, not used
    assert verify_tree(install.target, manifest, wrong).clean


def test_a_wrong_blake3_digest_is_corruption(tmp_path: Path) -> None:
    # A digest that does not match makes the file modified: no second chance with SHA-256
    # (repair then re-fetches it and rewrites the sidecar from the signed index).
    install, manifest, big, chunks = make_install(tmp_path, with_blake3=True)
    wrong = ChunkHashes(CB, chunks.hashes, {**chunks.blake3_hashes, sha(SMALL): b3(b"other")})
    report = verify_tree(install.target, manifest, wrong)
    assert report.modified == ["a.txt"]
    assert report.ok == 2
    rewrite_sidecar(install, lambda d: d["blake3"].update({sha(big): "0" * 64}))
    report = verify_tree(install.target, manifest, install.current_chunks())
    assert report.modified == ["data/big.pak"]


def test_a_swapped_file_fails_though_its_digest_is_in_the_sidecar(tmp_path: Path) -> None:
    # Digests are looked up by the content the manifest names for a path, so a file
    # replaced by another content of the build (same size, its own BLAKE3 listed) fails.
    install, manifest, _, _ = make_install(tmp_path, with_blake3=True)
    a = install.target / "a.txt"
    os.chmod(a, 0o644)
    a.unlink()
    a.write_bytes(TWIN)
    report = verify_tree(install.target, manifest, install.current_chunks())
    assert report.modified == ["a.txt"]


@pytest.mark.parametrize(
    "tamper",
    [
        "drop the file's digest",
        "drop every digest",
        "malformed digest",
        "digest of another content",
        "unknown format",
        "not json",
    ],
)
def test_a_tampered_sidecar_does_not_let_a_corrupt_file_pass(tmp_path: Path, tamper: str) -> None:
    install, manifest, big, _ = make_install(tmp_path, with_blake3=True)
    flip(install.target / "a.txt", 0)
    flip(install.target / "data" / "big.pak", CB + 7)
    if tamper == "not json":
        sidecar(install).write_bytes(b"{garbage")
    else:

        def edit(doc: dict[str, Any]) -> None:
            if tamper == "drop the file's digest":
                del doc["blake3"][sha(SMALL)], doc["blake3"][sha(big)]
            elif tamper == "drop every digest":
                del doc["blake3"]
            elif tamper == "malformed digest":
                doc["blake3"][sha(SMALL)] = "not a digest"
            elif tamper == "digest of another content":
                doc["blake3"][sha(SMALL)] = doc["blake3"][sha(TWIN)]
            else:
                doc["format"] = "changeover.tree-chunks/99"

        rewrite_sidecar(install, edit)
    report = verify_tree(install.target, manifest, install.current_chunks())
    assert report.modified == ["a.txt", "data/big.pak"]
    assert report.ok == 1


def test_many_small_files_in_batches_and_extras(tmp_path: Path) -> None:
    # Small files are hashed in batches: one bad file among many is still the only one
    # reported; files and links that the manifest lacks, at any depth, are extra.
    root = tmp_path / "tree"
    files = {f"d{i % 7}/f{i}.txt": f"file {i}\n".encode() * (i + 1) for i in range(300)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    manifest = Manifest.of([FileEntry(rel, len(d), sha(d)) for rel, d in files.items()])
    checks = ChunkHashes(blake3_hashes={sha(d): b3(d) for d in files.values()})
    for given in (checks, None):
        assert verify_tree(root, manifest, given).clean
    flip(root / "d3/f150.txt", 3)
    (root / "d1/deeper").mkdir()
    (root / "d1/deeper/x.dll").write_bytes(b"x")
    os.symlink("d2", root / "link-to-dir")
    for given in (checks, None):
        report = verify_tree(root, manifest, given)
        assert report.modified == ["d3/f150.txt"]
        assert report.extra == ["d1/deeper/x.dll", "link-to-dir"]
        assert report.ok == 299
