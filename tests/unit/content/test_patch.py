"""Unit tests for ``changeover.content.patch``: round trips, large files, hostile patches."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zlib
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changeover.content import patch, zstd_prefix
from changeover.content.patch import (
    MAGIC,
    MIN_RUN,
    PatchHeader,
    Segment,
    apply_patch,
    make_patch,
    read_header,
)
from changeover.errors import IntegrityError, InvalidInput, NotFound
from gates import unavailable


def game_data(rng: random.Random, size: int) -> bytes:
    """Compressible but not trivial bytes: random 'words' from a small vocabulary."""
    words = [rng.randbytes(rng.randint(3, 12)) for _ in range(300)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


def roundtrip(
    tmp_path: Path, old: bytes, new: bytes, runs: bool = False, **kw: int
) -> tuple[int, bytes]:
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    size = make_patch(tmp_path / "old", tmp_path / "new", tmp_path / "p", runs=runs, **kw)
    runs = (tmp_path / "p").read_bytes()[:8] != MAGIC  # none found: a plain patch
    assert size == (tmp_path / "p").stat().st_size
    out = io.BytesIO()
    apply_patch(
        tmp_path / "old",
        tmp_path / "p",
        out,
        expected_size=len(new),
        expected_sha256=hashlib.sha256(new).hexdigest(),
        runs=runs,
    )
    return size, out.getvalue()


@pytest.fixture(params=["libzstd", "python-zstandard"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "libzstd":
        if zstd_prefix._libzstd() is None:
            unavailable("libzstd", "no libzstd.so.1 found (apt-get install libzstd1)")
    else:
        monkeypatch.setattr(zstd_prefix, "_libzstd", lambda: None)
    assert zstd_prefix.backend().startswith(request.param)
    return str(request.param)


def test_small_edit_gives_small_patch(tmp_path: Path, backend: str) -> None:
    rng = random.Random(1)
    old = game_data(rng, 300_000)
    new = old[:1000] + b"inserted!" + old[1000:150_000] + old[150_100:]
    size, got = roundtrip(tmp_path, old, new)
    assert got == new
    assert size < 500 < len(zstandard.ZstdCompressor(level=19).compress(new)) // 100


def test_empty_and_identical_files(tmp_path: Path) -> None:
    data = game_data(random.Random(2), 5000)
    for old, new in [(b"", b""), (b"", data), (data, b""), (data, data)]:
        size, got = roundtrip(tmp_path, old, new)
        assert got == new
        assert size < 100 or old == b""


def test_whole_file_uses_one_frame_against_the_whole_old_file(tmp_path: Path) -> None:
    old = game_data(random.Random(3), 20_000)
    roundtrip(tmp_path, old, old[::-1], segment_bytes=1 << 20)
    with open(tmp_path / "p", "rb") as f:
        header = read_header(f)
    assert header.segments[0].ranges == ((0, 20_000),)
    assert len(header.segments) == 1


def test_large_file_is_segmented_with_windows_found_by_content(tmp_path: Path) -> None:
    rng = random.Random(4)
    old = game_data(rng, 400_000)
    # A build that inserted a new asset at the front (shifting everything by more than any
    # slack), moved its last block to the middle and edited a few bytes.
    moved = old[-40_000:]
    new = bytearray(rng.randbytes(30_000) + old[:200_000] + moved + old[200_000:-40_000])
    for _ in range(20):
        new[rng.randrange(len(new))] ^= 0xFF
    segment = 32_768
    size, got = roundtrip(tmp_path, old, bytes(new), segment_bytes=segment)
    assert got == new
    with open(tmp_path / "p", "rb") as f:
        header = read_header(f)
    assert len(header.segments) > 10
    assert all(s.window_bytes <= segment and s.new_length <= segment for s in header.segments)
    # The 30 kB of random bytes cost what they cost; everything else is found in the old file.
    assert size < 30_000 + 8_000


def test_segmented_file_without_common_content_still_round_trips(tmp_path: Path) -> None:
    rng = random.Random(5)
    old, new = rng.randbytes(50_000), rng.randbytes(60_000)
    _, got = roundtrip(tmp_path, old, new, segment_bytes=4096)
    assert got == new


edits = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 300), st.binary(max_size=200)),
    max_size=6,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(0, 12_000),
    changes=edits,
    segment=st.sampled_from([256, 2048, 1 << 20]),
)
def test_apply_make_is_identity(
    tmp_path: Path, seed: int, size: int, changes: list[tuple[int, int, bytes]], segment: int
) -> None:
    old = game_data(random.Random(seed), size)
    new = bytearray(old)
    for where, cut, insert in changes:
        at = min(where, len(new))
        new[at : at + cut] = insert
    _, got = roundtrip(tmp_path, old, bytes(new), segment_bytes=segment, level=3)
    assert got == new


# -- hostile and wrong patches ------------------------------------------------------------


@pytest.fixture
def made(tmp_path: Path, backend: str) -> tuple[Path, bytes, bytes]:
    """A patch and its files; every test of it runs against both decoders."""
    rng = random.Random(6)
    old = game_data(rng, 30_000)
    new = old[:5000] + rng.randbytes(3000) + old[5000:]
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    make_patch(tmp_path / "old", tmp_path / "new", tmp_path / "p", segment_bytes=8192)
    return tmp_path, new, (tmp_path / "p").read_bytes()


def apply_bytes(tmp: Path, patch: bytes, size: int, **kw: object) -> bytes:
    out = io.BytesIO()
    apply_patch(tmp / "old", io.BytesIO(patch), out, expected_size=size, **kw)  # type: ignore[arg-type]
    return out.getvalue()


def test_bytes_stream_patch_applies(made: tuple[Path, bytes, bytes]) -> None:
    tmp, new, patch = made
    assert apply_bytes(tmp, patch, len(new)) == new


@pytest.mark.parametrize(
    "garbage",
    [b"", b"hello", MAGIC, b"\x28\xb5\x2f\xfd" + bytes(100), random.Random(7).randbytes(4096)],
)
def test_garbage_is_rejected(made: tuple[Path, bytes, bytes], garbage: bytes) -> None:
    tmp, new, _ = made
    with pytest.raises(InvalidInput):
        apply_bytes(tmp, garbage, len(new))


def test_every_truncation_is_rejected(made: tuple[Path, bytes, bytes]) -> None:
    tmp, new, patch = made
    for cut in sorted({*range(0, 200, 7), *range(200, len(patch), max(1, len(patch) // 50))}):
        with pytest.raises(InvalidInput):
            apply_bytes(tmp, patch[:cut], len(new))


def test_flipped_bits_are_rejected(made: tuple[Path, bytes, bytes]) -> None:
    tmp, new, patch = made
    rng = random.Random(8)
    for pos in [*range(0, 120, 3), *(rng.randrange(len(patch)) for _ in range(60))]:
        bad = bytearray(patch)
        bad[pos] ^= 1 << rng.randrange(8)
        out = io.BytesIO()
        with pytest.raises(InvalidInput):
            apply_patch(tmp / "old", io.BytesIO(bytes(bad)), out, expected_size=len(new))
        assert len(out.getvalue()) <= len(new)


def test_trailing_data_is_rejected(made: tuple[Path, bytes, bytes]) -> None:
    tmp, new, patch = made
    with pytest.raises(InvalidInput, match="after the last segment"):
        apply_bytes(tmp, patch + b"x", len(new))


def test_wrong_size_or_base_is_rejected(made: tuple[Path, bytes, bytes]) -> None:
    tmp, new, patch = made
    with pytest.raises(InvalidInput, match="expected"):
        apply_bytes(tmp, patch, len(new) + 1)
    old = (tmp / "old").read_bytes()
    (tmp / "old").write_bytes(old + b"!")
    with pytest.raises(InvalidInput, match="base file"):
        apply_bytes(tmp, patch, len(new))
    # Same size, other content: zstd's checksum of the result catches it.
    (tmp / "old").write_bytes(bytes(len(old)))
    with pytest.raises((InvalidInput, IntegrityError)):
        apply_bytes(tmp, patch, len(new))


def test_expected_hash_is_checked(made: tuple[Path, bytes, bytes]) -> None:
    tmp, new, patch = made
    with pytest.raises(IntegrityError):
        apply_bytes(tmp, patch, len(new), expected_sha256="0" * 64)


def test_missing_files_raise_not_found(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    with pytest.raises(NotFound):
        make_patch(tmp_path / "a", tmp_path / "missing", tmp_path / "p")
    with pytest.raises(NotFound):
        apply_patch(tmp_path / "a", tmp_path / "missing", io.BytesIO(), expected_size=1)
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def forge(header: PatchHeader, frames: bytes) -> bytes:
    return header.encode() + frames


def test_decompression_bomb_writes_no_more_than_declared(tmp_path: Path, backend: str) -> None:
    (tmp_path / "old").write_bytes(b"")
    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(50 << 20))
    patch = forge(PatchHeader(0, 100, (Segment(100, len(bomb), ()),)), bomb)
    out = io.BytesIO()
    with pytest.raises(InvalidInput):
        apply_patch(tmp_path / "old", io.BytesIO(patch), out, expected_size=100)
    assert len(out.getvalue()) <= 100


def test_header_asking_for_too_much_memory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "old").write_bytes(bytes(10_000))
    header = PatchHeader(10_000, 5000, (Segment(5000, 10, ((0, 10_000),)),))
    with pytest.raises(InvalidInput, match="memory"):
        read_header(io.BytesIO(header.encode()), max_segment_bytes=8192)
    too_far = PatchHeader(10_000, 5000, (Segment(5000, 10, ((5000, 6000),)),))
    with pytest.raises(InvalidInput, match="outside"):
        read_header(io.BytesIO(too_far.encode()))


def test_header_with_bad_checksum_or_sizes_is_refused() -> None:
    good = PatchHeader(10, 20, (Segment(15, 3, ()), Segment(5, 3, ()))).encode()
    read_header(io.BytesIO(good))
    with pytest.raises(InvalidInput, match="checksum"):
        read_header(io.BytesIO(good[:-4] + struct.pack("<I", zlib.crc32(good) ^ 1)))
    wrong_total = PatchHeader(10, 21, (Segment(15, 3, ()), Segment(5, 3, ()))).encode()
    with pytest.raises(InvalidInput):
        read_header(io.BytesIO(wrong_total))
    other_version = bytearray(good)
    other_version[8] = 9
    with pytest.raises(InvalidInput, match="version"):
        read_header(io.BytesIO(bytes(other_version)))


def test_make_patch_replaces_output_atomically(tmp_path: Path) -> None:
    data = game_data(random.Random(9), 10_000)
    (tmp_path / "old").write_bytes(data)
    (tmp_path / "new").write_bytes(data[1:])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "p").write_bytes(b"previous")
    make_patch(tmp_path / "old", tmp_path / "new", tmp_path / "out" / "p")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["p"]
    assert (tmp_path / "out" / "p").read_bytes().startswith(MAGIC)


# -- copy runs (method zstd-runs) ---------------------------------------------------------


def edited_archive(rng: random.Random) -> tuple[bytes, bytes]:
    """An old file of incompressible 'media' and a new one with a region rewritten, one
    inserted and one removed: long unchanged stretches at three offsets."""
    old = rng.randbytes(6 << 20)
    mib = 1 << 20
    new = (
        old[: mib + 123]
        + rng.randbytes(200_000)  # rewritten
        + old[mib + 123 + 200_000 : 3 * mib]
        + rng.randbytes(77_777)  # inserted
        + old[3 * mib : 4 * mib]
        + old[4 * mib + 50_000 :]  # 50,000 bytes removed
    )
    return old, new


def test_copy_runs_code_unchanged_stretches_as_copies(tmp_path: Path, backend: str) -> None:
    """zstd pays about 14 bytes a 128 KiB block over unchanged bytes; copy segments pay a
    few dozen bytes a stretch, found exactly (the new bytes are rewritten around them)."""
    old, new = edited_archive(random.Random(21))
    plain, out = roundtrip(tmp_path, old, new, level=3)
    assert out == new
    runs, out = roundtrip(tmp_path, old, new, level=3, runs=True)
    assert out == new
    changed = 200_000 + 77_777
    # Over the new bytes: the header (six segments, about 250 bytes) and two frames'.
    assert runs - changed < 400 < plain - changed
    with open(tmp_path / "p", "rb") as f:
        header = read_header(f, runs=True)
    copies = [s for s in header.segments if s.copy]
    assert len(copies) == 4 and all(s.new_length >= MIN_RUN for s in copies)
    assert sum(s.new_length for s in copies) == len(new) - changed
    # A runs patch is not a plain one, and the other way round: the index names the method.
    with pytest.raises(InvalidInput, match="other zstd method"):
        read_header(io.BytesIO((tmp_path / "p").read_bytes()))


def test_a_gap_between_runs_is_coded_against_the_old_bytes_around_its_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """zstd indexes a frame's whole window first: a gap between two runs gets the old bytes
    around its place, not the whole old file, and still finds the edited bytes there."""
    monkeypatch.setattr(patch, "GAP_CONTEXT", 256 << 10)
    rng = random.Random(23)
    mib = 1 << 20
    old = rng.randbytes(8 * mib)
    edited = bytearray(old[4 * mib : 4 * mib + 300_000])
    for i in range(0, len(edited), 1000):  # too many edits for a run inside: one gap
        edited[i] ^= 0xFF
    new = old[: 4 * mib] + bytes(edited) + old[4 * mib + 300_000 :]
    size, out = roundtrip(tmp_path, old, new, level=3, runs=True)
    assert out == new
    with open(tmp_path / "p", "rb") as f:
        header = read_header(f, runs=True)
    [gap] = [s for s in header.segments if not s.copy]
    assert gap.new_length == 299_001  # from the first edited byte to the last
    [(offset, length)] = gap.ranges
    assert offset <= 4 * mib and offset + length >= 4 * mib + 299_001  # the gap's place
    assert length < len(old) // 4
    assert size < 300_000 // 10  # coded as matches of the old bytes, not as new bytes


def test_a_gap_window_is_only_for_a_gap_beside_a_run_and_smaller_than_the_file() -> None:
    mib = 1 << 20
    context = patch.GAP_CONTEXT
    assert patch._gap_window(100 * mib, None, None, 10, 256 * mib) is None
    assert patch._gap_window(100 * mib, 50 * mib, 50 * mib + 10, 10, 256 * mib) == (
        (50 * mib - context, 2 * context + 10),
    )
    assert patch._gap_window(100 * mib, None, 2 * mib, 10, 256 * mib) == ((0, 2 * mib + context),)
    # A gap bigger than the context takes twice itself on each side.
    [(lo, length)] = patch._gap_window(100 * mib, 50 * mib, 60 * mib, 5 * mib, 256 * mib) or [()]
    assert (lo, length) == (40 * mib, 30 * mib)
    # As big as the old file (or a segment's bound) anyway: the ordinary window serves.
    assert patch._gap_window(6 * mib, 3 * mib, 3 * mib, 10, 256 * mib) is None
    assert patch._gap_window(100 * mib, 50 * mib, 50 * mib, 10, 2 * context) is None


def test_without_runs_a_runs_patch_is_a_plain_one(tmp_path: Path) -> None:
    rng = random.Random(22)
    old = game_data(rng, 300_000)
    new = old[:1000] + b"x" + old[1000:]
    roundtrip(tmp_path, old, new, level=3, runs=True)
    assert (tmp_path / "p").read_bytes()[:8] == MAGIC  # too short for a run: every client's


@pytest.mark.parametrize(
    "segments",
    [
        (Segment(5000, 0, ((0, 5000),)), Segment(5000, 0, ((9000, 5000),))),  # past the end
        (Segment(5000, 0, ((0, 4000),)), Segment(5000, 0, ((0, 6000),))),  # lengths differ
        (Segment(10_000, 0, ((0, 5000), (5000, 5000))),),  # two ranges
        (Segment(10_000, 0, ()),),  # none
    ],
)
def test_hostile_copy_segments_are_refused_before_anything_is_written(
    tmp_path: Path, segments: tuple[Segment, ...]
) -> None:
    (tmp_path / "old").write_bytes(bytes(10_000))
    patch = PatchHeader(10_000, 10_000, segments, runs=True).encode()
    out = io.BytesIO()
    with pytest.raises(InvalidInput):
        apply_patch(tmp_path / "old", io.BytesIO(patch), out, expected_size=10_000, runs=True)
    assert out.getvalue() == b""


def test_a_copy_segment_is_refused_in_a_plain_patch(tmp_path: Path) -> None:
    (tmp_path / "old").write_bytes(bytes(10_000))
    copy = (Segment(10_000, 0, ((0, 10_000),)),)
    out = io.BytesIO()
    with pytest.raises(InvalidInput, match="no frame"):
        apply_patch(
            tmp_path / "old",
            io.BytesIO(PatchHeader(10_000, 10_000, copy).encode()),
            out,
            expected_size=10_000,
        )
    apply_patch(  # the same, as a runs patch: the old file itself
        tmp_path / "old",
        io.BytesIO(PatchHeader(10_000, 10_000, copy, runs=True).encode()),
        out,
        expected_size=10_000,
        runs=True,
    )
    assert out.getvalue() == bytes(10_000)
