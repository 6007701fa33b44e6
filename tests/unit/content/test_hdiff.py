"""Unit tests for ``changeover.content.hdiff``: round trips, bounds, hostile patches.

Every hostile patch must fail closed before a byte reaches the sink."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changeover.content import hdiff, hdiff_body
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


def make(tmp: Path, old: bytes, new: bytes, **kw: object) -> bytes:
    (tmp / "old").write_bytes(old)
    (tmp / "new").write_bytes(new)
    size = hdiff.make_patch(tmp / "old", tmp / "new", tmp / "p", **kw)  # type: ignore[arg-type]
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
    lzma2 = make(tmp_path, old, new, coding=hdiff.LZMA2)
    assert lzma2.startswith(hdiff.MAGICS[hdiff.LZMA2]) and lzma2[40:].startswith(b"HDIFF13&lzma2")
    assert apply(tmp_path, lzma2, new, coding=hdiff.LZMA2) == new


def test_a_diff_is_recoded_not_made_again(tmp_path: Path) -> None:
    """``reuse``: the LZMA2 patch recodes the zstd one's diff (the same diff, so the same
    result), and the zstd one comes back from it; a patch of other files is refused."""
    rng = random.Random(5)
    old = code_like(rng, 100_000)
    new = relinked(old, rng)
    zstd = make(tmp_path, old, new)
    direct = make(tmp_path, old, new, coding=hdiff.LZMA2)
    (tmp_path / "zstd").write_bytes(zstd)
    recoded = make(tmp_path, old, new, coding=hdiff.LZMA2, reuse=tmp_path / "zstd")
    assert recoded == direct
    (tmp_path / "lzma2").write_bytes(recoded)
    assert make(tmp_path, old, new, reuse=tmp_path / "lzma2") == zstd
    (tmp_path / "other").write_bytes(make(tmp_path, old + b"x", new))
    with pytest.raises(InvalidInput, match="not an hdiffpatch patch of these files"):
        make(tmp_path, old, new, coding=hdiff.LZMA2, reuse=tmp_path / "other")
    (tmp_path / "garbage").write_bytes(b"CHOVHDIF" + bytes(40))
    with pytest.raises(InvalidInput):
        make(tmp_path, old, new, coding=hdiff.LZMA2, reuse=tmp_path / "garbage")


@given(
    old=st.binary(max_size=3000),
    new=st.binary(min_size=1, max_size=3000),
    level=st.sampled_from([1, 19]),
    coding=st.sampled_from([hdiff.ZSTD, hdiff.LZMA2]),
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_apply_make_is_identity(
    tmp_path: Path, old: bytes, new: bytes, level: int, coding: hdiff.Coding
) -> None:
    patch = make(tmp_path, old, new, level=level, coding=coding)
    assert apply(tmp_path, patch, new, coding=coding) == new


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


HEAD = 40
"""Bytes of our header before HDiffPatch's body."""


class Made(NamedTuple):
    """A real patch of relinked code, of one coding (each hostile test runs under both)."""

    tmp: Path
    new: bytes
    patch: bytes
    coding: hdiff.Coding

    def apply(self, patch: bytes, out: io.BytesIO, **kw: object) -> None:
        args: dict[str, object] = {
            "expected_size": len(self.new),
            "expected_sha256": sha(self.new),
            "coding": self.coding,
        }
        hdiff.apply_patch(self.tmp / "old", io.BytesIO(patch), out, **(args | kw))  # type: ignore[arg-type]

    def refused(
        self, patch: bytes, error: type[Exception] | tuple[type[Exception], ...] = InvalidInput
    ) -> None:
        """The patch is refused and nothing at all was written."""
        out = io.BytesIO()
        with pytest.raises(error):
            self.apply(patch, out)
        assert out.getvalue() == b""

    def header(self, old_size: int, new_size: int, body_length: int, version: int = 1) -> bytes:
        magic = hdiff.MAGICS[self.coding]
        raw = struct.pack("<8sHHQQQ", magic, version, 0, old_size, new_size, body_length)
        return raw + struct.pack("<I", zlib.crc32(raw))


@pytest.fixture(params=[hdiff.ZSTD, hdiff.LZMA2])
def made(tmp_path: Path, request: pytest.FixtureRequest) -> Made:
    rng = random.Random(2)
    old = code_like(rng, 30_000)
    new = relinked(old, rng)
    return Made(tmp_path, new, make(tmp_path, old, new, coding=request.param), request.param)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"hello",
        hdiff.MAGICS[hdiff.ZSTD],
        hdiff.MAGICS[hdiff.LZMA2],
        b"CHOVPTCH" + bytes(60),
        random.Random(3).randbytes(4096),
    ],
)
def test_garbage_is_refused(made: Made, garbage: bytes) -> None:
    made.refused(garbage)


def test_every_truncation_and_trailing_data_are_refused(made: Made) -> None:
    patch = made.patch
    for cut in sorted({*range(0, 80, 3), *range(80, len(patch), max(1, len(patch) // 40))}):
        made.refused(patch[:cut])
    made.refused(patch + b"x")


def test_a_patch_of_the_other_coding_is_refused(made: Made) -> None:
    """The index names the method, the patch its coding by its magic: they must agree."""
    other = hdiff.LZMA2 if made.coding == hdiff.ZSTD else hdiff.ZSTD
    out = io.BytesIO()
    with pytest.raises(InvalidInput, match="another coding"):
        made.apply(made.patch, out, coding=other)
    assert out.getvalue() == b""


def test_flipped_bits_give_the_right_file_or_nothing(made: Made) -> None:
    patch, new = made.patch, made.new
    rng = random.Random(4)
    accepted = 0
    for pos in [*range(0, 80, 2), *(rng.randrange(len(patch)) for _ in range(120))]:
        bad = bytearray(patch)
        bad[pos] ^= 1 << rng.randrange(8)
        out = io.BytesIO()
        try:
            made.apply(bytes(bad), out)
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


def test_sizes_the_body_claims_are_checked_before_hdiffpatch_allocates(made: Made) -> None:
    new, old_size = made.new, (made.tmp / "old").stat().st_size
    body = made.patch[HEAD:]
    kind = body[: body.index(b"\x00") + 1]
    assert kind == (b"HDIFF13&zstd\x00" if made.coding == hdiff.ZSTD else b"HDIFF13&lzma2\x00")
    made.refused(
        made.header(old_size, len(new), len(body)) + body[:-1] + b"!",
        (InvalidInput, IntegrityError),
    )
    # A body claiming a 2**60-byte result, under a header that tells the truth.
    huge = kind + b"\x90" + b"\x80" * 7 + b"\x00" + body[len(kind) :]
    made.refused(made.header(old_size, len(new), len(huge)) + huge)
    # Another codec, or HDiffPatch's uncompressed format, is not what we make.
    for codec in (b"HDIFF13&lzma\x00", b"HDIFF13&\x00", b"HDIFF13&zstd\x00", b"HDIFF13&lzma2\x00"):
        if codec != kind:
            other = codec + body[len(kind) :]
            made.refused(made.header(old_size, len(new), len(other)) + other)
    # A header claiming more than the bound, or another base.
    made.refused(made.header(old_size, hdiff.MAX_BYTES + 1, len(body)) + body)
    made.refused(made.header(old_size + 1, len(new), len(body)) + body)
    made.refused(made.header(old_size, len(new), len(body), version=2) + body)


def test_the_bodys_parts_must_fill_it_and_use_small_windows(made: Made) -> None:
    new, old_size = made.new, (made.tmp / "old").stat().st_size
    longer = made.patch[HEAD:] + b"\x00"
    made.refused(made.header(old_size, len(new), len(longer)) + longer)
    magic = b"\x28\xb5\x2f\xfd"
    hdiff_body.check_frame(magic + b"\x60\x55\x01", "cover")  # single segment: no window
    hdiff_body.check_frame(magic + b"\x00" + bytes([(26 - 10) << 3]), "cover")  # 64 MiB
    for bad in (magic + b"\x00" + bytes([(30 - 10) << 3]), b"\x00" * 6, magic):
        with pytest.raises(InvalidInput):
            hdiff_body.check_frame(bad, "cover")
    # LZMA2's dictionary byte: at most twice the part (at least 4 KiB), at most 64 MiB.
    hdiff_body.check_lzma2(bytes([0]), 10, "cover")  # 4 KiB
    hdiff_body.check_lzma2(bytes([27]), 40 << 20, "cover")  # 48 MiB for a 40 MiB part
    for prop, raw in ((1, 10), (27, 20 << 20), (29, 1 << 30), (41, 1 << 30), (255, 10)):
        with pytest.raises(InvalidInput):
            hdiff_body.check_lzma2(bytes([prop]), raw, "cover")
    with pytest.raises(InvalidInput):
        hdiff_body.check_lzma2(b"", 10, "cover")


def test_an_lzma2_part_claiming_a_huge_dictionary_is_refused(tmp_path: Path) -> None:
    """A real LZMA2 patch whose first compressed part's dictionary byte is raised to
    1.5 GiB: refused before HDiffPatch would allocate it, nothing written."""
    rng = random.Random(6)
    old = code_like(rng, 30_000)
    new = relinked(old, rng)
    made = Made(tmp_path, new, make(tmp_path, old, new, coding=hdiff.LZMA2), hdiff.LZMA2)
    patch = bytearray(made.patch)
    body = bytes(patch[HEAD:])
    pos = len(b"HDIFF13&lzma2\x00")
    fields = []
    for _ in range(11):
        value, pos = hdiff_body.varint(body, pos)
        fields.append(value)
    sizes = list(zip(fields[3::2], fields[4::2], strict=True))  # (raw, packed) of each part
    first = next(i for i, (_, packed) in enumerate(sizes) if packed)
    start = HEAD + pos + sum(packed or raw for raw, packed in sizes[:first])
    assert patch[start] <= 40  # the dictionary byte the encoder wrote
    made.apply(bytes(patch), io.BytesIO())  # as made, it applies
    patch[start] = 39
    made.refused(bytes(patch))


def test_wrong_base_or_result_is_refused(made: Made) -> None:
    tmp, new, patch = made.tmp, made.new, made.patch
    old = (tmp / "old").read_bytes()
    (tmp / "old").write_bytes(bytes(b ^ 0x55 for b in old))  # same size, other content
    made.refused(patch, (InvalidInput, IntegrityError))
    (tmp / "old").write_bytes(old + b"!")
    made.refused(patch)
    (tmp / "old").write_bytes(old)
    out = io.BytesIO()
    with pytest.raises(InvalidInput, match="expected"):
        made.apply(patch, out, expected_size=len(new) + 1, expected_sha256="0")
    with pytest.raises(IntegrityError):
        made.apply(patch, out, expected_sha256="0" * 64)
    assert out.getvalue() == b""
    # A sink that checks the hash itself (the launcher's object writer) gets the result
    # unhashed, in one piece, and is the one to refuse it.
    made.apply(patch, out, expected_sha256="0" * 64, sink_checks=True)
    assert out.getvalue() == new


def test_preload_imports_the_binding_on_a_thread_and_the_exit_waits_for_it() -> None:
    # A fresh interpreter: this one imported the binding long ago.
    code = (
        "import sys, threading\n"
        "from changeover.content import hdiff\n"
        "assert 'hdiffpatch' not in sys.modules, 'imported before it was asked for'\n"
        "hdiff.preload()\n"
        "[loader] = [t for t in threading.enumerate() if t.name == 'hdiffpatch-import']\n"
        "assert not loader.daemon\n"
        "loader.join()\n"
        "print('hdiffpatch' in sys.modules)\n"
        "hdiff.preload()  # loaded: no second thread\n"
        "print([t.name for t in threading.enumerate() if t.name == 'hdiffpatch-import'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["True", "[]"], out.stdout + out.stderr
