"""Unit tests for ``changeover.content.patching``: every method through one door, an unknown
one refused before its patch is read."""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import pytest

from changeover.content import patching
from changeover.content.patch_index import PatchMethod
from changeover.errors import InvalidInput, UnsupportedPatchMethod


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, bytes]:
    rng = random.Random(1)
    old = rng.randbytes(20_000) * 3
    new = old[:9000] + b"changed" + old[9000:]
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    return tmp_path, new


@pytest.mark.parametrize("method", list(PatchMethod))
def test_each_method_round_trips_and_names_itself(
    files: tuple[Path, bytes], method: PatchMethod
) -> None:
    tmp, new = files
    size = patching.make(method, tmp / "old", tmp / "new", tmp / "p", level=19)
    assert size == (tmp / "p").stat().st_size < len(new) // 10
    made = patching.method_of(tmp / "p")
    # Too short for a copy run: a zstd-runs patch is a plain one, which every client applies.
    assert made is (PatchMethod.ZSTD if method is PatchMethod.ZSTD_RUNS else method)
    assert patching.new_size(made, tmp / "p") == len(new)
    out = io.BytesIO()
    patching.apply(
        made, tmp / "old", tmp / "p", out, expected_size=len(new), expected_sha256=sha(new)
    )
    assert out.getvalue() == new
    # Applied as another method, it is corrupt: the method's magic is checked.
    for other in (m for m in PatchMethod if m is not made):
        with pytest.raises(InvalidInput):
            patching.apply(
                other, tmp / "old", tmp / "p", out, expected_size=len(new), expected_sha256=sha(new)
            )
        with pytest.raises(InvalidInput):
            patching.new_size(other, tmp / "p")
    assert out.getvalue() == new


class Untouchable(io.BytesIO):
    def read(self, n: int | None = -1, /) -> bytes:
        raise AssertionError("an unknown method's patch was read")


def test_an_unknown_method_is_refused_before_anything_is_read_or_written(
    files: tuple[Path, bytes],
) -> None:
    tmp, new = files
    out = io.BytesIO()
    with pytest.raises(UnsupportedPatchMethod) as caught:
        patching.apply(
            "xdelta9", tmp / "old", Untouchable(), out, expected_size=len(new), expected_sha256="0"
        )
    assert out.getvalue() == b""
    assert caught.value.method == "xdelta9" and caught.value.code == "unsupported_patch_method"
    assert "update the client" in str(caught.value)
    assert isinstance(caught.value, InvalidInput)  # callers fall back to the whole file
    with pytest.raises(UnsupportedPatchMethod):
        patching.new_size("xdelta9", tmp / "old")
    with pytest.raises(UnsupportedPatchMethod):
        patching.make("xdelta9", tmp / "old", tmp / "new", tmp / "p", level=3)
    assert not (tmp / "p").exists()


@pytest.mark.parametrize("method", [PatchMethod.HDIFFPATCH, PatchMethod.HDIFFPATCH_LZMA2])
def test_an_hdiffpatch_patch_needs_the_expected_hash_and_a_stored_one_its_magic(
    files: tuple[Path, bytes], method: PatchMethod
) -> None:
    tmp, new = files
    assert patching.whole_in_memory(method) and not patching.whole_in_memory(PatchMethod.ZSTD)
    patching.make(method, tmp / "old", tmp / "new", tmp / "p", level=3)
    with pytest.raises(InvalidInput, match="SHA-256"):
        patching.apply(method, tmp / "old", tmp / "p", io.BytesIO(), expected_size=len(new))
    with pytest.raises(InvalidInput, match="not a patch"):
        patching.method_of(tmp / "new")


def test_a_zstd_runs_patch_with_runs_names_itself_and_is_no_plain_one(tmp_path: Path) -> None:
    rng = random.Random(3)
    old = rng.randbytes(3 << 20)
    new = old[: 1 << 20] + rng.randbytes(5000) + old[(1 << 20) + 5000 :]
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    patching.make(
        PatchMethod.ZSTD_RUNS, tmp_path / "old", tmp_path / "new", tmp_path / "p", level=3
    )
    assert patching.method_of(tmp_path / "p") is PatchMethod.ZSTD_RUNS
    assert not patching.whole_in_memory(PatchMethod.ZSTD_RUNS)
    out = io.BytesIO()
    with pytest.raises(InvalidInput):
        patching.apply(
            PatchMethod.ZSTD, tmp_path / "old", tmp_path / "p", out, expected_size=len(new)
        )
    patching.apply(
        PatchMethod.ZSTD_RUNS,
        tmp_path / "old",
        tmp_path / "p",
        out,
        expected_size=len(new),
        expected_sha256=sha(new),
    )
    assert out.getvalue() == new
