"""HDiffPatch's compressed diff (the body of a :mod:`changeover.content.hdiff` patch):
checked before HDiffPatch sees it, and its parts decoded here.

The body is a type string (``HDIFF13&zstd\\0``, ``HDIFF13&lzma2\\0``; ``HDIFF13&\\0``
for the plain, uncompressed diff), then packed unsigned integers: the new and old files'
sizes, the number of covers, and for each of the four parts its decoded and compressed
sizes (0: stored as it is); then the parts, in order, each compressed on its own.

Why decode the parts here: HDiffPatch's own LZMA2 decoder took 15-27 ms of a 7.7 MB
library's 20-35 ms apply (libpython 3.11's patch, whose diff decodes to 0.77 MB), its
diff applied in 6 ms once plain. liblzma and zstd release the GIL, so two parts decode
side by side; the plain body goes to HDiffPatch. The memory this takes stays within
:mod:`~changeover.content.hdiff`'s bound (three times the largest file): it is done only
when the parts decode to at most half the new file and to more than the body (as any
compressed body does), so the body, the parts and the plain body together are at most
1.5 times the new file; else HDiffPatch decodes them itself, piece by piece.
"""

from __future__ import annotations

import lzma
import threading
from dataclasses import dataclass
from typing import Final, Literal

import zstandard

from changeover.errors import InvalidInput

Coding = Literal["zstd", "lzma2"]
ZSTD: Final = "zstd"
LZMA2: Final = "lzma2"
TYPES: dict[Coding, bytes] = {ZSTD: b"HDIFF13&zstd\x00", LZMA2: b"HDIFF13&lzma2\x00"}
PLAIN_TYPE = b"HDIFF13&\x00"
PARTS = ("cover", "rle_ctrl", "rle_code", "new_data_diff")
WINDOW_LOG_MAX = 26
"""The largest zstd window or LZMA2 dictionary a part may ask for (64 MiB)."""
THREAD_BYTES = 256 << 10
"""Parts decoding to fewer bytes than this, all told, are decoded on the caller's thread
(a thread costs more than it saves)."""

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    raw: int
    """Its size decoded."""
    packed: int
    """Its size compressed; 0 if it is stored as it is."""
    start: int
    """Where it starts in the body."""

    @property
    def end(self) -> int:
        return self.start + (self.packed or self.raw)


@dataclass(frozen=True, slots=True)
class Layout:
    sizes: tuple[int, int, int]
    """The new file's size, the old file's and the number of covers."""
    parts: tuple[Part, ...]


def check(body: bytes, new_size: int, old_size: int, coding: Coding) -> Layout:
    """The layout of ``body``, which must be HDiffPatch's compressed format of ``coding``
    for exactly these sizes (HDiffPatch allocates the new file's size it reads there), its
    four parts must fill the body exactly, none may claim more than twice the new file,
    and each compressed part must start with a zstd frame whose window, or an LZMA2
    dictionary size, is at most ``2**WINDOW_LOG_MAX`` (HDiffPatch's decoders accept 1 GiB
    and 4 GiB).

    Raises:
        InvalidInput: it is not.
    """
    if not body.startswith(TYPES[coding]):
        raise InvalidInput(f"corrupt hdiffpatch patch: the body is not a {coding} HDIFF13 diff")
    pos = len(TYPES[coding])
    fields = []
    for _ in range(3 + 2 * len(PARTS)):
        value, pos = varint(body, pos)
        fields.append(value)
    found_new, found_old, covers, *sizes = fields
    if (found_new, found_old) != (new_size, old_size):
        raise InvalidInput("corrupt hdiffpatch patch: the body's sizes differ from the header's")
    limit = 2 * new_size + 1024
    parts = []
    for name, raw, packed in zip(PARTS, sizes[0::2], sizes[1::2], strict=True):
        if raw > limit or packed > limit:
            raise InvalidInput(f"corrupt hdiffpatch patch: its {name} part claims {raw} bytes")
        if packed and coding == LZMA2:
            check_lzma2(body[pos : pos + 1], raw, name)
        elif packed:
            check_frame(body[pos : pos + min(packed, 18)], name)
        parts.append(Part(name, raw, packed, pos))
        pos += packed or raw
    if pos != len(body):
        raise InvalidInput("corrupt hdiffpatch patch: its parts do not fill its body")
    return Layout((found_new, found_old, covers), tuple(parts))


def check_frame(head: bytes, part: str) -> None:
    """A zstd frame header (RFC 8878 3.1.1.1) with a window within our bound."""
    if len(head) < 6 or not head.startswith(_ZSTD_MAGIC):
        raise InvalidInput(f"corrupt hdiffpatch patch: its {part} part is not a zstd frame")
    descriptor = head[4]
    if descriptor & 0x20:
        return  # single segment: the window is the content, bounded by the part's size
    exponent, mantissa = head[5] >> 3, head[5] & 7
    window = (1 << (10 + exponent)) * (8 + mantissa) // 8
    if window > 1 << WINDOW_LOG_MAX:
        raise InvalidInput(f"hdiffpatch patch: its {part} part needs a {window}-byte window")


def check_lzma2(prop: bytes, raw: int, part: str) -> None:
    """HDiffPatch's LZMA2 part starts with the dictionary-size byte its decoder allocates
    by (the LZMA SDK's ``LZMA2_DIC_SIZE_FROM_PROP``); the encoder picks at most the next
    size up from the part's own, so more than twice it, or over the window, is hostile."""
    if len(prop) != 1 or prop[0] > 40:
        raise InvalidInput(f"corrupt hdiffpatch patch: its {part} part is not LZMA2")
    if _dictionary(prop[0]) > min(1 << WINDOW_LOG_MAX, max(1 << 12, 2 * raw)):
        raise InvalidInput(
            f"hdiffpatch patch: its {part} part needs a {_dictionary(prop[0])}-byte dictionary"
        )


def _dictionary(prop: int) -> int:
    return (2 | (prop & 1)) << (prop // 2 + 11)


def plain(body: bytes, layout: Layout, coding: Coding) -> bytes | None:
    """``body`` (checked: :func:`check`) as HDiffPatch's plain format, its parts decoded
    here, the two largest side by side; None when they would take too much memory (left
    to HDiffPatch: see the module docstring) or are not compressed.

    Raises:
        InvalidInput: a part does not decode to exactly the bytes it claims.
    """
    total = sum(p.raw for p in layout.parts)
    if not any(p.packed for p in layout.parts):
        return None  # plain already, in all but its type
    if 2 * total > layout.sizes[0] or len(body) > total:
        return None
    if not all(_sized(body, p, coding) for p in layout.parts):
        return None
    decoded: dict[str, bytes] = {}
    errors: list[InvalidInput] = []

    def decode(parts: list[Part]) -> None:
        try:
            for p in parts:
                decoded[p.name] = _decode(body[p.start : p.end], p, coding)
        except InvalidInput as e:
            errors.append(e)

    largest, *rest = sorted(layout.parts, key=lambda p: p.raw, reverse=True)
    helper = None
    if total >= THREAD_BYTES:
        helper = threading.Thread(target=decode, args=(rest,), name="hdiff-parts")
        helper.start()
    decode([largest] if helper else [largest, *rest])
    if helper is not None:
        helper.join()
    if errors:
        raise errors[0]
    head = PLAIN_TYPE + b"".join(_packed_uint(n) for n in layout.sizes)
    head += b"".join(_packed_uint(p.raw) + _packed_uint(0) for p in layout.parts)
    return head + b"".join(decoded[p.name] for p in layout.parts)


def _decode(data: bytes, part: Part, coding: Coding) -> bytes:
    if not part.packed:
        return data
    try:
        if coding == LZMA2:
            filters = [{"id": lzma.FILTER_LZMA2, "dict_size": _dictionary(data[0])}]
            lz = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters)
            out = lz.decompress(data[1:], max_length=part.raw)
            complete = lz.eof and not lz.unused_data
        else:  # a frame that says its size (_sized), which the decoder holds it to
            zd = zstandard.ZstdDecompressor(max_window_size=1 << WINDOW_LOG_MAX).decompressobj()
            out = zd.decompress(data)
            complete = zd.eof and not zd.unused_data
    except (lzma.LZMAError, zstandard.ZstdError) as e:
        raise InvalidInput(f"corrupt hdiffpatch patch: its {part.name} part: {e}") from e
    if not complete or len(out) != part.raw:
        raise InvalidInput(f"corrupt hdiffpatch patch: its {part.name} part does not decode")
    return out


def _sized(body: bytes, part: Part, coding: Coding) -> bool:
    """Whether a zstd part's frame says it decodes to the size the body gives it (the
    encoder writes it), so that decoding it allocates no more."""
    if coding != ZSTD or not part.packed:
        return True
    try:
        return zstandard.get_frame_parameters(body[part.start : part.end]).content_size == part.raw
    except zstandard.ZstdError:
        return False  # HDiffPatch refuses it, as corrupt


def varint(data: bytes, pos: int) -> tuple[int, int]:
    """HDiffPatch's packed unsigned integer: 7 bits a byte, most significant first, the
    high bit set on every byte but the last."""
    value = 0
    for i in range(pos, min(len(data), pos + 10)):
        value = (value << 7) | (data[i] & 0x7F)
        if not data[i] & 0x80:
            return value, i + 1
    raise InvalidInput("corrupt hdiffpatch patch: a size in the body's header is unreadable")


def _packed_uint(value: int) -> bytes:
    groups = [value & 0x7F]
    while value := value >> 7:
        groups.append(0x80 | (value & 0x7F))
    return bytes(reversed(groups))
