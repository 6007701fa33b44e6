"""Unit tests for ``changeover.content.hdiff``: round trips, bounds, hostile patches.

Every hostile patch must fail closed before a byte reaches the sink."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changeover.content import hdiff
from changeover.errors import IntegrityError, InvalidInput, NotFound


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_like(rng: random.Random, size: int) -> bytes:
    """Bytes like machine code: short instructions from a small set, with 32-bit operands."""
    ops = [rng.randbytes(rng.randint(1, 3)) for _ in range(60)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(ops) + rng.randrange(1 << 16).to_bytes(4, "little")
    return bytes(out[:size])


def relinked(old: bytes, rng: random.Random, shift: int = 48) -> bytes:
    """``old`` with code inserted and every 'address' after it moved, as a relink does."""
    new = bytearray(old[:4000] + rng.randbytes(200) + old[4000:])
    for pos in range(4200, len(new) - 4, 97):
        value = int.from_bytes(new[pos : pos + 4], "little")
        new[pos : pos + 4] = ((value + shift) & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(new)


def make(tmp: Path, old: bytes, new: bytes, **kw: int) -> bytes:
    (tmp / "old").write_bytes(old)
    (tmp / "new").write_bytes(new)
    size = hdiff.make_patch(tmp / "old", tmp / "new", tmp / "p", **kw)
    patch = (tmp / "p").read_bytes()
    assert size == len(patch)
    return patch


def apply(tmp: Path, patch: bytes, new: bytes, **kw: object) -> bytes:
    out = io.BytesIO()
    hdiff.apply_patch(
        tmp / "old",
        io.BytesIO(patch),
        out,
        expected_size=len(new),
        expected_sha256=sha(new),
        **kw,  # type: ignore[arg-type]
    )
    return out.getvalue()


def test_relinked_code_round_trips_into_a_small_patch(tmp_path: Path) -> None:
    rng = random.Random(1)
    old = code_like(rng, 200_000)
    new = relinked(old, rng)
    patch = make(tmp_path, old, new)
    assert apply(tmp_path, patch, new) == new
    assert len(patch) < len(zlib.compress(new, 9)) // 4


@given(
    old=st.binary(max_size=3000),
    new=st.binary(min_size=1, max_size=3000),
    level=st.sampled_from([1, 19]),
)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_apply_make_is_identity(tmp_path: Path, old: bytes, new: bytes, level: int) -> None:
    assert apply(tmp_path, make(tmp_path, old, new, level=level), new) == new


def test_bounds_are_refused_on_both_sides(tmp_path: Path) -> None:
    assert hdiff.usable(10, 10, 10) and not hdiff.usable(11, 10, 10)
    assert not hdiff.usable(10, 11, 10) and not hdiff.usable(10, 0, 10)
    with pytest.raises(InvalidInput, match="larger than"):
        make(tmp_path, b"a" * 100, b"b" * 101, max_bytes=100)
    with pytest.raises(InvalidInput, match="1 to"):
        make(tmp_path, b"a", b"")
    with pytest.raises(InvalidInput, match="level"):
        make(tmp_path, b"a", b"b", level=23)
    with pytest.raises(NotFound):
        hdiff.make_patch(tmp_path / "absent", tmp_path / "absent", tmp_path / "p")
    new = b"new file " * 50
    patch = make(tmp_path, b"old file " * 50, new)
    with pytest.raises(InvalidInput, match="beyond this client's bound"):
        apply(tmp_path, patch, new, max_bytes=len(new) - 1)


# -- hostile and wrong patches ------------------------------------------------------------


@pytest.fixture
def made(tmp_path: Path) -> tuple[Path, bytes, bytes]:
    rng = random.Random(2)
    old = code_like(rng, 30_000)
    new = relinked(old, rng)
    return tmp_path, new, make(tmp_path, old, new)


def refused(tmp: Path, patch: bytes, new: bytes, error: type[Exception] = InvalidInput) -> None:
    """The patch is refused and nothing at all was written."""
    out = io.BytesIO()
    with pytest.raises(error):
        hdiff.apply_patch(
            tmp / "old", io.BytesIO(patch), out, expected_size=len(new), expected_sha256=sha(new)
        )
    assert out.getvalue() == b""


def header(old_size: int, new_size: int, body_length: int, version: int = 1) -> bytes:
    raw = struct.pack("<8sHHQQQ", hdiff.MAGIC, version, 0, old_size, new_size, body_length)
    return raw + struct.pack("<I", zlib.crc32(raw))


@pytest.mark.parametrize(
    "garbage",
    [b"", b"hello", hdiff.MAGIC, b"CHOVPTCH" + bytes(60), random.Random(3).randbytes(4096)],
)
def test_garbage_is_refused(made: tuple[Path, bytes, bytes], garbage: bytes) -> None:
    tmp, new, _ = made
    refused(tmp, garbage, new)


def test_every_truncation_and_trailing_data_are_refused(made: tuple[Path, bytes, bytes]) -> None:
    tmp, new, patch = made
    for cut in sorted({*range(0, 80, 3), *range(80, len(patch), max(1, len(patch) // 40))}):
        refused(tmp, patch[:cut], new)
    refused(tmp, patch + b"x", new)


def test_flipped_bits_give_the_right_file_or_nothing(made: tuple[Path, bytes, bytes]) -> None:
    tmp, new, patch = made
    rng = random.Random(4)
    accepted = 0
    for pos in [*range(0, 80, 2), *(rng.randrange(len(patch)) for _ in range(120))]:
        bad = bytearray(patch)
        bad[pos] ^= 1 << rng.randrange(8)
        out = io.BytesIO()
        try:
            hdiff.apply_patch(
                tmp / "old", io.BytesIO(bad), out, expected_size=len(new), expected_sha256=sha(new)
            )
        except (InvalidInput, IntegrityError):
            # Refused: by the header checks, HDiffPatch, the size, or (a flip that still
            # decodes to a file of the right size) the hash. Nothing was written.
            assert out.getvalue() == b""
        else:
            # A few bits do not matter to the result (unused header bits of zstd's frames,
            # say): then the result is exactly the right file.
            assert out.getvalue() == new
            accepted += 1
    assert accepted < 20


def test_sizes_the_body_claims_are_checked_before_hdiffpatch_allocates(
    made: tuple[Path, bytes, bytes],
) -> None:
    tmp, new, patch = made
    old_size = (tmp / "old").stat().st_size
    body = patch[36:]
    # A body claiming a 2**60-byte result, under a header that tells the truth.
    huge = b"HDIFF13&zstd\x00" + b"\x90" + b"\x80" * 7 + b"\x00" + body[13:]
    refused(tmp, header(old_size, len(new), len(huge)) + huge, new)
    # Another codec, or HDiffPatch's uncompressed format, is not what we make.
    for other in (b"HDIFF13&lzma\x00" + body[13:], b"HDIFF13&\x00" + body[13:]):
        refused(tmp, header(old_size, len(new), len(other)) + other, new)
    # A header claiming more than the bound, or another base.
    refused(tmp, header(old_size, hdiff.MAX_BYTES + 1, len(body)) + body, new)
    refused(tmp, header(old_size + 1, len(new), len(body)) + body, new)
    refused(tmp, header(old_size, len(new), len(body), version=2) + body, new)


def test_the_bodys_parts_must_fill_it_and_use_small_zstd_windows(
    made: tuple[Path, bytes, bytes],
) -> None:
    tmp, new, patch = made
    old_size = (tmp / "old").stat().st_size
    body = patch[36:]
    longer = body + b"\x00"
    refused(tmp, header(old_size, len(new), len(longer)) + longer, new)
    magic = b"\x28\xb5\x2f\xfd"
    hdiff._check_frame(magic + b"\x60\x55\x01", "cover")  # single segment: no window
    hdiff._check_frame(magic + b"\x00" + bytes([(26 - 10) << 3]), "cover")  # 64 MiB
    for bad in (magic + b"\x00" + bytes([(30 - 10) << 3]), b"\x00" * 6, magic):
        with pytest.raises(InvalidInput):
            hdiff._check_frame(bad, "cover")


def test_wrong_base_or_result_is_refused(made: tuple[Path, bytes, bytes]) -> None:
    tmp, new, patch = made
    old = (tmp / "old").read_bytes()
    (tmp / "old").write_bytes(bytes(b ^ 0x55 for b in old))  # same size, other content
    refused(tmp, patch, new, (InvalidInput, IntegrityError))  # type: ignore[arg-type]
    (tmp / "old").write_bytes(old + b"!")
    refused(tmp, patch, new)
    (tmp / "old").write_bytes(old)
    out = io.BytesIO()
    with pytest.raises(InvalidInput, match="expected"):
        hdiff.apply_patch(
            tmp / "old", io.BytesIO(patch), out, expected_size=len(new) + 1, expected_sha256="0"
        )
    with pytest.raises(IntegrityError):
        hdiff.apply_patch(
            tmp / "old", io.BytesIO(patch), out, expected_size=len(new), expected_sha256="0" * 64
        )
    assert out.getvalue() == b""
