"""Unit tests for the launcher's object store and its ``verify``: an object is stored under
a SHA-256 only once that hash is proven for its bytes, whatever second digest (BLAKE3) the
signed index gives beside it, and ``verify`` checks every file by the SHA-256 it is named
by."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import blake3
import pytest
import zstandard

from changeover.cli.fastpath import launcher_verify
from changeover.content.manifest import FileEntry, Manifest
from changeover.errors import IntegrityError, UntrustedMetadata
from changeover.launcher import objects as objects_module
from changeover.launcher.install import Install, verify_tree
from changeover.launcher.objects import ObjectStore


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def put(objects: ObjectStore, data: bytes, executable: bool = False) -> None:
    with objects.writer(sha(data), len(data), executable) as w:
        for i in range(0, len(data), 100_000):
            w.write(data[i : i + 100_000])


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


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
    assert not stored_files(tmp_path / "objects")


GOOD, EVIL = b"good content\n" * 50, b"evil content\n" * 50


def add(objects: ObjectStore, tmp_path: Path, how: str, content: bytes, **kw: str) -> None:
    """Store ``content`` under GOOD's name, the way ``how`` says."""
    src = tmp_path / "src"
    if how == "writer":
        with objects.writer(sha(GOOD), len(GOOD), False, **kw) as w:
            w.write(content)
    elif how == "zstd blob":
        src.write_bytes(zstandard.ZstdCompressor().compress(content))
        objects.add_from_zstd(src, sha(GOOD), len(GOOD), False, **kw)
    else:
        src.write_bytes(content)
        objects.add_from_file(src, sha(GOOD), len(GOOD), False, **kw)


@pytest.mark.parametrize("how", ["writer", "zstd blob", "file"])
def test_bytes_matching_only_the_blake3_are_never_stored_under_the_sha256(
    tmp_path: Path, how: str
) -> None:
    # A signer compromised once lists, beside GOOD's SHA-256, the BLAKE3 of other bytes and
    # serves those: checked against the BLAKE3 alone they would become the object that
    # every install of the cache shares and that no later honest metadata replaces.
    objects = ObjectStore(tmp_path / "objects")
    with pytest.raises(IntegrityError):
        add(objects, tmp_path, how, EVIL, blake3=b3(EVIL))
    assert not stored_files(tmp_path / "objects")
    # An error a player reads names the file and says what is wrong.
    with pytest.raises(UntrustedMetadata) as caught:
        add(objects, tmp_path, how, EVIL, blake3=b3(EVIL), name="data/level1.pak")
    assert "data/level1.pak" in caught.value.message
    assert "contradicts itself" in caught.value.message
    assert not stored_files(tmp_path / "objects")


@pytest.mark.parametrize("how", ["writer", "zstd blob", "file"])
def test_two_signed_digests_that_disagree_are_an_error_naming_the_file(
    tmp_path: Path, how: str
) -> None:
    objects = ObjectStore(tmp_path / "objects")
    with pytest.raises(UntrustedMetadata) as caught:
        add(objects, tmp_path, how, GOOD, blake3=b3(EVIL), name="bin/game")
    assert "bin/game" in caught.value.message
    assert not stored_files(tmp_path / "objects")
    with pytest.raises(IntegrityError):  # the size counts as well
        add(objects, tmp_path, how, GOOD[:-1], blake3=b3(GOOD[:-1]))
    add(objects, tmp_path, how, GOOD, blake3=b3(GOOD))
    assert objects.path(sha(GOOD), False).read_bytes() == GOOD


def test_writer_leaves_nothing_on_an_error(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path / "objects")
    data = b"x" * 1000

    def fail_midway() -> None:
        with objects.writer(sha(data), len(data), False) as w:
            w.write(data[:10])
            raise RuntimeError("decoder failed")

    with pytest.raises(RuntimeError):
        fail_midway()
    assert not stored_files(tmp_path / "objects")


@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "fsync-each"])
def test_a_batch_puts_its_objects_in_place_only_when_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncfs: bool
) -> None:
    if not syncfs:  # as on Windows and macOS: a fsync of each object instead
        monkeypatch.setattr(objects_module, "_syncfs", lambda path: False)
    monkeypatch.setattr(objects_module, "BATCH_SECONDS", 3600.0)  # one group: the whole block
    objects = ObjectStore(tmp_path / "objects")
    one, many = b"in one piece\n" * 10, random.Random(2).randbytes(350_000)
    with objects.batch():
        add(objects, tmp_path, "writer", GOOD)
        put(objects, one)
        put(objects, many, executable=True)
        # Written and checked, not yet in place: only temporary files so far.
        assert not objects.has(sha(GOOD), False) and not objects.has(sha(many), True)
        assert len(stored_files(tmp_path / "objects")) == 3
    assert objects.path(sha(GOOD), False).read_bytes() == GOOD
    assert objects.path(sha(one), False).read_bytes() == one
    assert objects.path(sha(many), True).read_bytes() == many
    assert os.stat(objects.path(sha(many), True)).st_mode & 0o777 == 0o555
    assert len(stored_files(tmp_path / "objects")) == 3  # no temporary file left


def test_a_long_batch_commits_in_groups_so_a_kill_loses_little(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(objects_module, "BATCH_SECONDS", 3600.0)
    monkeypatch.setattr(objects_module, "BATCH_BYTES", 1000)
    objects = ObjectStore(tmp_path / "objects")
    small, big = b"a" * 600, b"b" * 600
    with objects.batch():
        put(objects, small)
        assert not objects.has(sha(small), False)  # 600 bytes: the group is not full
        put(objects, big)  # 1,200: committed, both
        assert objects.has(sha(small), False) and objects.has(sha(big), False)
        put(objects, SMALL)
        assert not objects.has(sha(SMALL), False)
    assert objects.has(sha(SMALL), False)
    # And by age: a group older than BATCH_SECONDS goes with the next object.
    monkeypatch.setattr(objects_module, "BATCH_SECONDS", 0.0)
    with objects.batch():
        put(objects, TWIN)
        assert objects.has(sha(TWIN), False)


def test_a_batch_that_fails_keeps_what_was_finished_and_nothing_else(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path / "objects")

    def update() -> None:
        with objects.batch():
            put(objects, SMALL)
            with pytest.raises(IntegrityError):
                add(objects, tmp_path, "writer", EVIL)  # checked and refused at once
            raise RuntimeError("the next download failed")

    with pytest.raises(RuntimeError, match="next download"):
        update()
    assert objects.has(sha(SMALL), False)
    assert [p.name for p in stored_files(tmp_path / "objects")] == [sha(SMALL)]
    with pytest.raises(RuntimeError, match="not reentrant"), objects.batch(), objects.batch():
        pass


def test_a_big_object_given_in_one_piece_is_hashed_beside_its_write_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A patch result made whole in memory arrives in one piece; its SHA-256 is computed on
    # a thread while it is written, and checked as any object's.
    started: list[str] = []
    real_thread = objects_module.threading.Thread

    def thread(*args: object, **kwargs: object) -> object:
        started.append(str(kwargs.get("name")))
        return real_thread(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(objects_module.threading, "Thread", thread)
    big = random.Random(7).randbytes(objects_module.HASH_THREAD_BYTES + 1)
    other = big[:-1] + bytes([big[-1] ^ 1])  # same size, one bit off
    objects = ObjectStore(tmp_path / "objects")
    with pytest.raises(IntegrityError), objects.writer(sha(big), len(big), False) as w:
        w.write(other)
    assert started == ["object-hash"]  # the thread path, not the small piece's
    with (
        pytest.raises(UntrustedMetadata),
        objects.writer(sha(big), len(big), False, blake3=b3(other)) as w,
    ):
        w.write(big)
    assert not stored_files(tmp_path / "objects")
    with objects.writer(sha(big), len(big), False, blake3=b3(big)) as w:
        w.write(big)
    assert objects.path(sha(big), False).read_bytes() == big
    assert started == ["object-hash"] * 3


SMALL = b"hello\n"
TWIN = b"world\n"  # same size as SMALL, other content


def make_install(tmp_path: Path) -> tuple[Install, Manifest, bytes]:
    big = random.Random(3).randbytes(3 << 20)
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
    install = Install(tmp_path / "game", tmp_path / "cache")
    install.switch(install.build_tree(manifest, objects), {"image": "game"})
    return install, manifest, big


def flip(path: Path, where: int) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(where)
        byte = f.read(1)
        f.seek(where)
        f.write(bytes([byte[0] ^ 1]))


def replace(path: Path, data: bytes) -> None:
    """Write through the hard link: the object the tree shares changes with it."""
    os.chmod(path, 0o644)
    path.write_bytes(data)


@pytest.mark.parametrize("where", [0, (1 << 20) + 5, (3 << 20) - 1])
def test_verify_finds_one_flipped_byte_anywhere(tmp_path: Path, where: int) -> None:
    install, manifest, _ = make_install(tmp_path)
    assert verify_tree(install.target, manifest).clean
    flip(install.target / "data" / "big.pak", where)
    report = verify_tree(install.target, manifest)
    assert report.modified == ["data/big.pak"]
    assert report.ok == 2


def test_a_swapped_file_is_modified(tmp_path: Path) -> None:
    install, manifest, _ = make_install(tmp_path)
    a = install.target / "a.txt"
    os.chmod(a, 0o644)
    a.unlink()
    a.write_bytes(TWIN)  # another content of the build, same size
    assert verify_tree(install.target, manifest).modified == ["a.txt"]


def test_verify_checks_the_sha256_a_file_is_named_by_not_a_stored_second_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A cache as an earlier launcher left it after a compromised index: the object named
    # by SMALL's SHA-256 holds other bytes, and the tree's sidecar lists their BLAKE3 (and
    # chunk SHA-256) as SMALL's. ``launcher verify`` must call the file modified.
    install, _, _ = make_install(tmp_path)
    replace(install.target / "a.txt", TWIN)
    tree = install.current_tree()
    assert tree is not None
    sidecar = {
        "format": "changeover.tree-chunks/1",
        "chunk_bytes": 1 << 20,
        "chunks": {sha(SMALL): [sha(TWIN)]},
        "blake3": {sha(SMALL): b3(TWIN)},
    }
    (tree.parent / f"{tree.name}.chunks.json").write_text(json.dumps(sidecar))
    code = launcher_verify(install.target, tmp_path / "cache", True)
    report = json.loads(capsys.readouterr().out)
    assert report["modified"] == ["a.txt"]
    assert code != 0


def test_many_small_files_in_batches_and_extras(tmp_path: Path) -> None:
    # Small files are hashed in batches: one bad file among many is still the only one
    # reported; files and links that the manifest lacks, at any depth, are extra.
    root = tmp_path / "tree"
    files = {f"d{i % 7}/f{i}.txt": f"file {i}\n".encode() * (i + 1) for i in range(300)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    manifest = Manifest.of([FileEntry(rel, len(d), sha(d)) for rel, d in files.items()])
    assert verify_tree(root, manifest).clean
    flip(root / "d3/f150.txt", 3)
    (root / "d1/deeper").mkdir()
    (root / "d1/deeper/x.dll").write_bytes(b"x")
    os.symlink("d2", root / "link-to-dir")
    report = verify_tree(root, manifest)
    assert report.modified == ["d3/f150.txt"]
    assert report.extra == ["d1/deeper/x.dll", "link-to-dir"]
    assert report.ok == 299
