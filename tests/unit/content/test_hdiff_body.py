"""HDiffPatch's compressed diff decoded here: the plain body is HDiffPatch's own, a part
that does not decode to exactly what it claims is refused, and a body whose parts would
take too much memory is left to HDiffPatch."""

from __future__ import annotations

import lzma
import random

import hdiffpatch
import pytest
import zstandard

from changeover.content import hdiff_body
from changeover.content.hdiff_body import LZMA2, ZSTD, Coding
from changeover.errors import InvalidInput

CONFIGS = {
    ZSTD: hdiffpatch.ZStdConfig(level=19, window=20, threads=1),
    LZMA2: hdiffpatch.Lzma2Config(level=9, window=20, threads=1),
}


def pair(size: int, seed: int = 1) -> tuple[bytes, bytes]:
    """An old file like code and a new one with every fourth 'operand' moved."""
    rng = random.Random(seed)
    old = bytearray()
    while len(old) < size:
        old += rng.choice([b"\x48\x8b", b"\xe8", b"\x0f\x85", b"\xc3"]) + rng.randbytes(4)
    new = bytearray(old[:size])
    for pos in range(1000, size - 4, 29):
        new[pos] = (new[pos] + 3) & 0xFF
    return bytes(old[:size]), bytes(new)


def body_of(old: bytes, new: bytes, coding: Coding) -> bytes:
    return hdiffpatch.diff(old, new, CONFIGS[coding], validate=True)


def uint(value: int) -> bytes:
    groups = [value & 0x7F]
    while value := value >> 7:
        groups.append(0x80 | (value & 0x7F))
    return bytes(reversed(groups))


def rebuilt(
    layout: hdiff_body.Layout, coding: Coding, parts: dict[str, tuple[int, bytes]]
) -> bytes:
    """A body of ``layout``'s sizes whose parts are ``parts``: name -> (raw size claimed,
    the part's bytes as stored)."""
    head = hdiff_body.TYPES[coding] + b"".join(uint(n) for n in layout.sizes)
    for p in layout.parts:  # a part stored as it is (packed 0) stays so
        raw, data = parts[p.name]
        head += uint(raw) + uint(len(data) if p.packed or raw != len(data) else 0)
    return head + b"".join(parts[p.name][1] for p in layout.parts)


@pytest.mark.parametrize("coding", [ZSTD, LZMA2])
@pytest.mark.parametrize("threaded", [True, False])
def test_the_plain_body_is_hdiffpatchs_own_and_applies(
    coding: Coding, threaded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hdiff_body, "THREAD_BYTES", 0 if threaded else 1 << 40)
    old, new = pair(300_000)
    body = body_of(old, new, coding)
    layout = hdiff_body.check(body, len(new), len(old), coding)
    assert any(p.packed for p in layout.parts)
    plain = hdiff_body.plain(body, layout, coding)
    assert plain == hdiffpatch.recompress(body, None)
    assert hdiffpatch.apply(old, plain) == new


@pytest.mark.parametrize("coding", [ZSTD, LZMA2])
def test_parts_that_would_take_too_much_memory_are_left_to_hdiffpatch(coding: Coding) -> None:
    old, _ = pair(50_000)
    new = random.Random(2).randbytes(50_000)  # nothing in common: the diff is the new file
    body = body_of(old, new, coding)
    layout = hdiff_body.check(body, len(new), len(old), coding)
    assert 2 * sum(p.raw for p in layout.parts) > len(new)
    assert hdiff_body.plain(body, layout, coding) is None


def packed(data: bytes, coding: Coding) -> bytes:
    """``data`` compressed as HDiffPatch stores a part."""
    if coding == ZSTD:
        return zstandard.ZstdCompressor(level=3, write_content_size=True).compress(data)
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 16}]
    return bytes([8]) + lzma.compress(data, lzma.FORMAT_RAW, filters=filters)  # prop 8: 64 KiB


@pytest.mark.parametrize("coding", [ZSTD, LZMA2])
def test_a_part_that_does_not_decode_to_exactly_its_claimed_size_is_refused(
    coding: Coding,
) -> None:
    old, new = pair(300_000)
    body = body_of(old, new, coding)
    layout = hdiff_body.check(body, len(new), len(old), coding)
    part = max(layout.parts, key=lambda p: p.raw)
    assert hdiff_body.plain(body, layout, coding) is not None  # as made, it decodes
    kept = {p.name: (p.raw, body[p.start : p.end]) for p in layout.parts}
    longer = packed(b"\x01" * (part.raw + 10), coding)  # decodes to more than it claims
    if coding == LZMA2:
        bad = rebuilt(layout, coding, {**kept, part.name: (part.raw, longer)})
        with pytest.raises(InvalidInput, match=part.name):
            hdiff_body.plain(bad, hdiff_body.check(bad, len(new), len(old), coding), coding)
    else:  # a frame that says another size: HDiffPatch's to refuse
        bad = rebuilt(layout, coding, {**kept, part.name: (part.raw, longer)})
        assert (
            hdiff_body.plain(bad, hdiff_body.check(bad, len(new), len(old), coding), coding) is None
        )
    stored = body[part.start : part.end]
    trailing = stored + (
        packed(b"more", coding)[1:] if coding == LZMA2 else packed(b"more", coding)
    )
    bad = rebuilt(layout, coding, {**kept, part.name: (part.raw, trailing)})
    with pytest.raises(InvalidInput, match=part.name):
        hdiff_body.plain(bad, hdiff_body.check(bad, len(new), len(old), coding), coding)
    cut = stored[: len(stored) // 2]
    bad = rebuilt(layout, coding, {**kept, part.name: (part.raw, cut)})
    with pytest.raises(InvalidInput, match=part.name):
        hdiff_body.plain(bad, hdiff_body.check(bad, len(new), len(old), coding), coding)
