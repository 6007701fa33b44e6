"""Delta patches made by HDiffPatch: the method that wins on executables and libraries.

Recompiled code moves: every call and jump whose target shifted changes a few bytes, all
through the file. zstd ``--patch-from`` codes each such run as a fresh match; HDiffPatch
finds the approximate matches (a suffix array over the old file) and codes the byte
differences inside them separately, where they compress well. On real consecutive
releases of shared libraries its patches are 40-70 % of zstd -19's (README, "Dependencies
and why").

Its diff is coded by zstd (method ``hdiffpatch``) or LZMA2 (``hdiffpatch-lzma2``): on the
real libraries measured LZMA2 codes the same diff 5-9 % smaller (libpython 3.11: 200 KB
against 219 KB; numpy's 10 MB extension 71 KB against 77 KB) for 0.1-0.2 s more per
library. The diff (the suffix array, the costly part) is made once: the LZMA2 patch
recodes the zstd one's body (:func:`make_patch`'s ``reuse``). Clients that know only
``hdiffpatch`` refuse the other method by its name in the index, and fetch the file whole.

HDiffPatch works on whole files in memory (the binding takes and returns ``bytes``), so this
method is for files of at most ``MAX_BYTES`` on both sides; bigger ones get zstd
``--patch-from`` (:mod:`changeover.content.patch`), which streams. The bounds:

* making: the old and new files, the suffix array over the old one (4 bytes a byte), its
  match cache (at most 1 byte a byte) and the diff: about 7x ``MAX_BYTES`` at most;
* applying: the old file, the patch (at most ``MAX_BYTES`` too: a published patch is
  smaller than the file's blob), the new file, and HDiffPatch's decoder: a small cache
  and zstd windows that are checked to be at most ``2**WINDOW_LOG_MAX`` (64 MiB), filled
  only as far as the parts' sizes, which are checked against the new file's. At most 3x
  ``MAX_BYTES`` plus that: about 200 MiB, never more than 256 MiB, with the default
  bound. Nothing is written before the whole result is decoded, is of the expected size
  and has the expected SHA-256. An LZMA2 part's dictionary is checked the same way: at
  most the window, and at most twice the part's decoded size (the encoder never needs more).
  The parts are decoded by liblzma and zstd (:mod:`~changeover.content.hdiff_body`, twice
  as fast as HDiffPatch's own LZMA2 decoder) only where that stays within this bound.

Patch format (little-endian), version 1::

    magic "CHOVHDIF" (zstd) or "CHOVHDLZ" (lzma2)  version u16  flags u16 (0)
    old_size u64  new_size u64  body_length u64
    header_crc32 u32   (of every header byte before it)
    body: an HDiffPatch compressed diff ("HDIFF13&zstd\\0" or "HDIFF13&lzma2\\0" ...),
          exactly body_length bytes

:func:`apply_patch` checks the header against its caps and the actual old file, then the
body's own header (its format, its codec, the sizes it claims, which HDiffPatch would
otherwise allocate blindly, its parts' sizes and their zstd windows) before HDiffPatch
sees a byte of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import struct
import sys
import tempfile
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Protocol

from changeover.content import hdiff_body
from changeover.errors import IntegrityError, InvalidInput, NotFound

Coding = hdiff_body.Coding
ZSTD: Final = hdiff_body.ZSTD
LZMA2: Final = hdiff_body.LZMA2
"""How the diff's parts are compressed: each coding is a method of its own."""
MAGICS: dict[Coding, bytes] = {ZSTD: b"CHOVHDIF", LZMA2: b"CHOVHDLZ"}
MAGIC = MAGICS[ZSTD]
VERSION = 1
MAX_BYTES = 64 << 20
"""The largest old or new file this method takes (see the module docstring for why)."""
READ_THREAD_BYTES = 1 << 20
"""A base file of at least this size is read on a thread while the patch decodes."""
_LZMA2_LEVEL = 9
_LZMA2_WINDOW_LOG_MAX = 24
"""LZMA2's encoder needs about 11 bytes a byte of its dictionary: 16 MiB keeps a worker
under 200 MiB; the diffs of the libraries measured fit in it."""
_WINDOW_LOG_MIN = 20
_WINDOW_LOG_MAX = hdiff_body.WINDOW_LOG_MAX

_HEAD = struct.Struct("<8sHHQQQ")
_CRC = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class HdiffHeader:
    old_size: int
    new_size: int
    body_length: int

    def encode(self, coding: Coding = ZSTD) -> bytes:
        raw = _HEAD.pack(MAGICS[coding], VERSION, 0, self.old_size, self.new_size, self.body_length)
        return raw + _CRC.pack(zlib.crc32(raw))


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


def usable(old_size: int, new_size: int, max_bytes: int = MAX_BYTES) -> bool:
    """Whether a pair of files of these sizes is within this method's memory bound."""
    return 0 < new_size <= max_bytes and old_size <= max_bytes


# -- making ------------------------------------------------------------------------------


def make_patch(
    old: Path,
    new: Path,
    out: Path,
    *,
    level: int = 19,
    coding: Coding = ZSTD,
    reuse: Path | None = None,
    max_bytes: int = MAX_BYTES,
) -> int:
    """Write an HDiffPatch patch turning ``old`` into ``new`` to ``out`` (atomically);
    return its size.

    ``level`` is zstd's (1..22) for the zstd coding, LZMA2's is fixed (9). ``reuse`` is an
    earlier patch of the same pair (either coding): its diff is recoded instead of made
    again.

    Raises:
        InvalidInput: a file is empty (new) or larger than ``max_bytes``, the level is
            not zstd's (1..22), or ``reuse`` is not a patch of these files.
        NotFound: a file does not exist.
    """
    import hdiffpatch  # its 38 MB extension is loaded only by whoever makes or applies one

    if not 1 <= level <= 22:
        raise InvalidInput(f"zstd level {level} is not in 1..22")
    new_size = _size(new)
    window = min(_WINDOW_LOG_MAX, max(_WINDOW_LOG_MIN, (new_size - 1).bit_length()))
    config = (
        hdiffpatch.ZStdConfig(level=level, window=window, threads=1)
        if coding == ZSTD
        else hdiffpatch.Lzma2Config(
            level=_LZMA2_LEVEL, window=min(window, _LZMA2_WINDOW_LOG_MAX), threads=1
        )
    )
    try:
        if reuse is not None:
            old_size = _size(old)
            body, reused = _reused_body(reuse, old_size, new_size, max_bytes)
            if not usable(old_size, new_size, max_bytes):
                raise InvalidInput(f"hdiffpatch takes files of 1 to {max_bytes} bytes")
            body = body if reused == coding else hdiffpatch.recompress(body, config)
        else:
            old_data, new_data = _read(old, max_bytes), _read(new, max_bytes)
            old_size = len(old_data)
            if not usable(old_size, len(new_data), max_bytes):
                raise InvalidInput(f"hdiffpatch takes files of 1 to {max_bytes} bytes")
            body = hdiffpatch.diff(
                old_data,
                new_data,
                config,
                validate=False,  # the publisher applies every patch it keeps (publish.py)
                big_cache_match=True,  # same output, faster, +1 byte a byte of the old file
            )
    except hdiffpatch.HDiffPatchError as e:
        raise InvalidInput(f"hdiffpatch could not diff {new.name}: {e}") from e
    header = HdiffHeader(old_size, new_size, len(body))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.encode(coding))
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return _HEAD.size + _CRC.size + len(body)


def _reused_body(patch: Path, old_size: int, new_size: int, max_bytes: int) -> tuple[bytes, Coding]:
    """The checked body of an earlier patch of the same pair, and its coding."""
    with _open(patch) as f:
        coding = _coding_of(f.read(len(MAGIC)))
        f.seek(0)
        header = read_header(f, coding=coding, expected_size=new_size, max_bytes=max_bytes)
        body = f.read(header.body_length)
    if header.old_size != old_size or len(body) != header.body_length:
        raise InvalidInput(f"{patch.name} is not an hdiffpatch patch of these files")
    hdiff_body.check(body, new_size, old_size, coding)
    return body, coding


def _coding_of(magic: bytes) -> Coding:
    for coding, known in MAGICS.items():
        if magic == known:
            return coding
    raise InvalidInput("not a changeover hdiffpatch patch (bad magic)")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist", path=str(path)) from None


def _read(path: Path, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as f:
            # As many bytes as the file holds, and one more to see it has not grown: asking
            # for max_bytes + 1 would allocate all of them first (10 ms for 64 MiB).
            expected = min(os.fstat(f.fileno()).st_size, max_bytes)
            data = f.read(expected + 1)
            if len(data) > expected:  # it grew meanwhile: the rest, up to the bound
                data += f.read(max_bytes + 1 - len(data))
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist", path=str(path)) from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a directory, not a file", path=str(path)) from None
    if len(data) > max_bytes:
        raise InvalidInput(f"{path.name} is larger than hdiffpatch's {max_bytes} bytes")
    return data


# -- applying ----------------------------------------------------------------------------


def read_header(
    patch: BinaryIO,
    *,
    coding: Coding = ZSTD,
    expected_size: int | None = None,
    max_bytes: int = MAX_BYTES,
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
    if magic != MAGICS[coding]:
        if magic in MAGICS.values():
            raise InvalidInput(f"not an hdiffpatch patch coded by {coding} (another coding)")
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


def preload() -> None:
    """Start importing HDiffPatch's binding on a thread of its own.

    The import takes about 0.1 s (the package imports attrs for its configuration
    classes), which the first patch a client applies would wait for; a client calls this
    before it waits on the network, so the two overlap. Not a daemon thread: the
    interpreter's exit waits for an import under way rather than stopping it halfway.
    """
    if "hdiffpatch" not in sys.modules:
        threading.Thread(target=_import_binding, name="hdiffpatch-import").start()


def _import_binding() -> None:
    with contextlib.suppress(ImportError):  # the import where a patch is applied says so
        importlib.import_module("hdiffpatch")


def apply_patch(
    old: Path,
    patch: BinaryIO | Path,
    out: Sink,
    *,
    expected_size: int,
    expected_sha256: str,
    coding: Coding = ZSTD,
    max_bytes: int = MAX_BYTES,
    sink_checks: bool = False,
) -> None:
    """Write the file that ``patch`` makes from ``old`` to ``out``: all of it, of
    ``expected_size`` bytes and ``expected_sha256``, or nothing.

    The SHA-256 is required: HDiffPatch's coding checks no checksum of its own, so a
    patch corrupted in a way that still decodes would make other bytes of the right size.
    ``sink_checks``: ``out`` itself checks the SHA-256 of what it is given and keeps
    nothing otherwise (the launcher's object writer, which hashes while it writes): the
    result goes to it in one piece without being hashed here first.

    Raises:
        InvalidInput: the patch is not one, is corrupt or truncated, is for another base
            file, makes a file of another size, or is beyond ``max_bytes``.
        IntegrityError: the result does not match ``expected_sha256``.
        NotFound: ``old`` (or a ``patch`` path) does not exist.
    """
    import hdiffpatch

    with contextlib.ExitStack() as stack:
        src = stack.enter_context(_open(patch)) if isinstance(patch, Path) else patch
        header = read_header(src, coding=coding, expected_size=expected_size, max_bytes=max_bytes)
        body = src.read(header.body_length)
        if len(body) != header.body_length:
            raise InvalidInput("corrupt hdiffpatch patch: truncated body")
        if src.read(1):
            raise InvalidInput("corrupt hdiffpatch patch: data after the body")
    layout = hdiff_body.check(body, header.new_size, header.old_size, coding)
    if header.old_size < READ_THREAD_BYTES:
        body = hdiff_body.plain(body, layout, coding) or body
        old_data = _read(old, max_bytes)
    else:  # the base is read while the diff's parts decode (both release the GIL)
        with ThreadPoolExecutor(1, thread_name_prefix="hdiff-base") as pool:
            reading = pool.submit(_read, old, max_bytes)
            body = hdiff_body.plain(body, layout, coding) or body
            old_data = reading.result()
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
    if not sink_checks:
        got = hashlib.sha256(new_data).hexdigest()
        if got != expected_sha256:
            raise IntegrityError(f"patched {old.name}", expected_sha256, got)
    out.write(new_data)  # one piece: a sink that hashes on a thread needs none for it


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist", path=str(path)) from None
