"""Delta patches made by HDiffPatch: the method that wins on executables and libraries.

Recompiled code moves: every call and jump whose target shifted changes a few bytes, all
through the file. zstd ``--patch-from`` codes each such run as a fresh match; HDiffPatch
finds the approximate matches (a suffix array over the old file) and codes the byte
differences inside them separately, where they compress well. On real consecutive
releases of shared libraries its patches are 40-70 % of zstd -19's (README, "Dependencies
and why").

HDiffPatch works on whole files in memory (the binding takes and returns ``bytes``), so this
method is for files of at most ``MAX_BYTES`` on both sides; bigger ones get zstd
``--patch-from`` (:mod:`changeover.content.patch`), which streams. The bounds:

* making: the old and new files, the suffix array over the old one (4 bytes a byte), its
  match cache (at most 1 byte a byte) and the diff: about 7x ``MAX_BYTES`` at most;
* applying: the old file, the patch (at most ``MAX_BYTES`` too: a published patch is
  smaller than the file's blob), the new file, and HDiffPatch's decoder: a small cache
  and zstd windows that are checked to be at most ``2**_WINDOW_LOG_MAX`` (64 MiB), filled
  only as far as the parts' sizes, which are checked against the new file's. At most 3x
  ``MAX_BYTES`` plus that: about 200 MiB, never more than 256 MiB, with the default
  bound. Nothing is written before the whole result is decoded, is of the expected size
  and has the expected SHA-256.

Patch format (little-endian), version 1::

    magic "CHOVHDIF"  version u16  flags u16 (0)  old_size u64  new_size u64  body_length u64
    header_crc32 u32   (of every header byte before it)
    body: an HDiffPatch compressed diff ("HDIFF13&zstd\\0" ...), exactly body_length bytes

:func:`apply_patch` checks the header against its caps and the actual old file, then the
body's own header (its format, its codec, the sizes it claims, which HDiffPatch would
otherwise allocate blindly, its parts' sizes and their zstd windows) before HDiffPatch
sees a byte of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from changeover.errors import IntegrityError, InvalidInput, NotFound

MAGIC = b"CHOVHDIF"
VERSION = 1
MAX_BYTES = 64 << 20
"""The largest old or new file this method takes (see the module docstring for why)."""
_BODY_TYPE = b"HDIFF13&zstd\x00"
_WINDOW_LOG_MIN = 20
_WINDOW_LOG_MAX = 26
_WRITE_CHUNK = 1 << 20

_HEAD = struct.Struct("<8sHHQQQ")
_CRC = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class HdiffHeader:
    old_size: int
    new_size: int
    body_length: int

    def encode(self) -> bytes:
        raw = _HEAD.pack(MAGIC, VERSION, 0, self.old_size, self.new_size, self.body_length)
        return raw + _CRC.pack(zlib.crc32(raw))


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


def usable(old_size: int, new_size: int, max_bytes: int = MAX_BYTES) -> bool:
    """Whether a pair of files of these sizes is within this method's memory bound."""
    return 0 < new_size <= max_bytes and old_size <= max_bytes


# -- making ------------------------------------------------------------------------------


def make_patch(
    old: Path, new: Path, out: Path, *, level: int = 19, max_bytes: int = MAX_BYTES
) -> int:
    """Write an HDiffPatch patch turning ``old`` into ``new`` to ``out`` (atomically);
    return its size.

    Raises:
        InvalidInput: a file is empty (new) or larger than ``max_bytes``, or the level is
            not zstd's (1..22).
        NotFound: a file does not exist.
    """
    import hdiffpatch  # its 38 MB extension is loaded only by whoever makes or applies one

    if not 1 <= level <= 22:
        raise InvalidInput(f"zstd level {level} is not in 1..22")
    old_data, new_data = _read(old, max_bytes), _read(new, max_bytes)
    if not usable(len(old_data), len(new_data), max_bytes):
        raise InvalidInput(f"hdiffpatch takes files of 1 to {max_bytes} bytes")
    window = min(_WINDOW_LOG_MAX, max(_WINDOW_LOG_MIN, (len(new_data) - 1).bit_length()))
    try:
        body = hdiffpatch.diff(
            old_data,
            new_data,
            hdiffpatch.ZStdConfig(level=level, window=window, threads=1),
            validate=False,  # the publisher applies every patch it keeps (publish.py)
            big_cache_match=True,  # same output, faster, +1 byte a byte of the old file
        )
    except hdiffpatch.HDiffPatchError as e:
        raise InvalidInput(f"hdiffpatch could not diff {new.name}: {e}") from e
    header = HdiffHeader(len(old_data), len(new_data), len(body))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.encode())
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return _HEAD.size + _CRC.size + len(body)


def _read(path: Path, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist", path=str(path)) from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a directory, not a file", path=str(path)) from None
    if len(data) > max_bytes:
        raise InvalidInput(f"{path.name} is larger than hdiffpatch's {max_bytes} bytes")
    return data


# -- applying ----------------------------------------------------------------------------


def read_header(
    patch: BinaryIO, *, expected_size: int | None = None, max_bytes: int = MAX_BYTES
) -> HdiffHeader:
    """Read and validate a patch header, leaving ``patch`` at the body.

    Raises:
        InvalidInput: not such a patch, an unknown version, a corrupt or implausible header,
            or one for a file of another size than ``expected_size``.
    """
    raw = patch.read(_HEAD.size)
    if len(raw) != _HEAD.size:
        raise InvalidInput("corrupt hdiffpatch patch: truncated header")
    magic, version, flags, old_size, new_size, body_length = _HEAD.unpack(raw)
    if magic != MAGIC:
        raise InvalidInput("not a changeover hdiffpatch patch (bad magic)")
    if version != VERSION or flags != 0:
        raise InvalidInput(f"unsupported hdiffpatch patch version {version} (flags {flags:#x})")
    crc = patch.read(_CRC.size)
    if len(crc) != _CRC.size or _CRC.unpack(crc)[0] != zlib.crc32(raw):
        raise InvalidInput("corrupt hdiffpatch patch: header checksum does not match")
    if expected_size is not None and new_size != expected_size:
        raise InvalidInput(f"patch makes a file of {new_size} bytes, expected {expected_size}")
    if not usable(old_size, new_size, max_bytes) or not 0 < body_length <= max_bytes:
        raise InvalidInput(
            f"hdiffpatch patch for {old_size} -> {new_size} bytes ({body_length} of body)"
            f" is beyond this client's bound of {max_bytes} bytes"
        )
    return HdiffHeader(old_size, new_size, body_length)


def apply_patch(
    old: Path,
    patch: BinaryIO | Path,
    out: Sink,
    *,
    expected_size: int,
    expected_sha256: str,
    max_bytes: int = MAX_BYTES,
) -> None:
    """Write the file that ``patch`` makes from ``old`` to ``out``: all of it, of
    ``expected_size`` bytes and ``expected_sha256``, or nothing.

    The SHA-256 is required: HDiffPatch's coding checks no checksum of its own, so a
    patch corrupted in a way that still decodes would make other bytes of the right size.

    Raises:
        InvalidInput: the patch is not one, is corrupt or truncated, is for another base
            file, makes a file of another size, or is beyond ``max_bytes``.
        IntegrityError: the result does not match ``expected_sha256``.
        NotFound: ``old`` (or a ``patch`` path) does not exist.
    """
    import hdiffpatch

    with contextlib.ExitStack() as stack:
        src = stack.enter_context(_open(patch)) if isinstance(patch, Path) else patch
        header = read_header(src, expected_size=expected_size, max_bytes=max_bytes)
        body = src.read(header.body_length)
        if len(body) != header.body_length:
            raise InvalidInput("corrupt hdiffpatch patch: truncated body")
        if src.read(1):
            raise InvalidInput("corrupt hdiffpatch patch: data after the body")
    _check_body(body, header)
    old_data = _read(old, max_bytes)
    if len(old_data) != header.old_size:
        raise InvalidInput(f"patch is for a base file of {header.old_size} bytes, not {old}")
    try:
        new_data = hdiffpatch.apply(old_data, body)
    except (hdiffpatch.HDiffPatchError, MemoryError) as e:
        raise InvalidInput(f"corrupt hdiffpatch patch: it does not apply ({e})") from e
    del old_data, body
    if len(new_data) != header.new_size:
        raise InvalidInput(
            f"corrupt hdiffpatch patch: it makes {len(new_data)} bytes, not {header.new_size}"
        )
    got = hashlib.sha256(new_data).hexdigest()
    if got != expected_sha256:
        raise IntegrityError(f"patched {old.name}", expected_sha256, got)
    view = memoryview(new_data)
    for start in range(0, len(view), _WRITE_CHUNK):
        out.write(bytes(view[start : start + _WRITE_CHUNK]))


_PARTS = ("cover", "rle_ctrl", "rle_code", "new_data_diff")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _check_body(body: bytes, header: HdiffHeader) -> None:
    """The body must be HDiffPatch's zstd-compressed format for exactly the header's sizes
    (HDiffPatch allocates the new file's size it reads there), its four parts must fill the
    body exactly, none may claim more than twice the new file, and each compressed part
    must start with a zstd frame whose window is at most ``2**_WINDOW_LOG_MAX`` (HDiffPatch's
    decoder accepts 1 GiB)."""
    if not body.startswith(_BODY_TYPE):
        raise InvalidInput("corrupt hdiffpatch patch: the body is not a zstd HDIFF13 diff")
    pos = len(_BODY_TYPE)
    fields = []
    for _ in range(3 + 2 * len(_PARTS)):
        value, pos = _varint(body, pos)
        fields.append(value)
    new_size, old_size, _covers, *sizes = fields
    if (new_size, old_size) != (header.new_size, header.old_size):
        raise InvalidInput("corrupt hdiffpatch patch: the body's sizes differ from the header's")
    limit = 2 * header.new_size + 1024
    for name, raw, packed in zip(_PARTS, sizes[0::2], sizes[1::2], strict=True):
        if raw > limit or packed > limit:
            raise InvalidInput(f"corrupt hdiffpatch patch: its {name} part claims {raw} bytes")
        if packed:
            _check_frame(body[pos : pos + min(packed, 18)], name)
        pos += packed or raw
    if pos != len(body):
        raise InvalidInput("corrupt hdiffpatch patch: its parts do not fill its body")


def _check_frame(head: bytes, part: str) -> None:
    """A zstd frame header (RFC 8878 3.1.1.1) with a window within our bound."""
    if len(head) < 6 or not head.startswith(_ZSTD_MAGIC):
        raise InvalidInput(f"corrupt hdiffpatch patch: its {part} part is not a zstd frame")
    descriptor = head[4]
    if descriptor & 0x20:
        return  # single segment: the window is the content, bounded by the part's size
    exponent, mantissa = head[5] >> 3, head[5] & 7
    window = (1 << (10 + exponent)) * (8 + mantissa) // 8
    if window > 1 << _WINDOW_LOG_MAX:
        raise InvalidInput(f"hdiffpatch patch: its {part} part needs a {window}-byte window")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """HDiffPatch's packed unsigned integer: 7 bits a byte, most significant first, the
    high bit set on every byte but the last."""
    value = 0
    for i in range(pos, min(len(data), pos + 10)):
        value = (value << 7) | (data[i] & 0x7F)
        if not data[i] & 0x80:
            return value, i + 1
    raise InvalidInput("corrupt hdiffpatch patch: a size in the body's header is unreadable")


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist", path=str(path)) from None
