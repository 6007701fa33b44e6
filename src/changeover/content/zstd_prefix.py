"""One zstd frame of ``src`` compressed against ``prefix``: what ``zstd --patch-from`` does.

The decoder side needs nothing special: a frame made this way decodes with python-zstandard
given the prefix as a raw-content dictionary (see :mod:`changeover.content.patch`).

The encoder side does. python-zstandard only loads dictionaries, and zstd compiles a loaded
dictionary into a CDict whose tables the long-distance matcher never sees, so matches more
than a few MiB back in the old file are lost (measured on a 48 MiB file with scattered edits
and a moved block: 5.6 MB against 10.5 KB for ``zstd -19 --long --patch-from``). Only
``ZSTD_CCtx_refPrefix`` feeds the old bytes to the long-distance matcher, and python-zstandard
does not expose it. So when a libzstd >= 1.4.5 is installed (every Linux distribution ships
one) we call it through ctypes, with the parameters the zstd command line uses for
``--patch-from`` (one worker thread, as the CLI does by default: its matcher state fills from
the prefix, which gives the smallest frames). Without one we fall back to python-zstandard
with match-finder tables widened to reach as far back as memory allows: slower, larger
patches, same format.

Decoding (:func:`decompress`) also goes through ``ZSTD_DCtx_refPrefix`` when it can: the
decoder then reads the old bytes where they lie (a map of the old file) instead of a
dictionary copied in first, which for a 127 MB base saves a copy that took longer than
decoding the frame. Otherwise it falls back to python-zstandard's raw-content dictionary.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import sys
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import BinaryIO, cast

import zstandard

from changeover.errors import ChangeoverError

# zstd's stable parameter numbers (zstd.h, ZSTD_cParameter).
_C_COMPRESSION_LEVEL = 100
_C_WINDOW_LOG = 101
_C_ENABLE_LDM = 160
_C_CHECKSUM = 201
_C_NB_WORKERS = 400
_D_WINDOW_LOG_MAX = 100
_MIN_VERSION = 10405  # 1.4.5: the first to fill the long-distance matcher from a prefix
WINDOW_LOG_MIN = 10
WINDOW_LOG_MAX = 31
# Fallback only: tables of 2**26 entries (about 400 MiB) are the most we spend per worker.
_FALLBACK_CHAIN_LOG_MAX = 26

_LIB_NAMES = {
    "win32": ("libzstd.dll", "zstd.dll"),
    "darwin": ("libzstd.1.dylib", "libzstd.dylib"),
}


def window_log(span: int) -> int:
    """The smallest zstd window log whose window covers ``span`` bytes (prefix + source)."""
    return min(WINDOW_LOG_MAX, max(WINDOW_LOG_MIN, (span - 1).bit_length()))


@dataclass(frozen=True)
class _Lib:
    dll: ctypes.CDLL
    version: int


@functools.cache
def _libzstd() -> _Lib | None:
    for name in _LIB_NAMES.get(sys.platform, ("libzstd.so.1", "libzstd.so")):
        lib = _load(name)
        if lib is not None:
            return lib
    # A slower search (it may run ldconfig), for installs outside the loader's default path.
    found = ctypes.util.find_library("zstd")
    return _load(found) if found else None


def _load(name: str) -> _Lib | None:
    try:
        dll = ctypes.CDLL(name)
        _declare(dll)
    except (OSError, AttributeError):  # absent, or too old to have the advanced API
        return None
    version = int(dll.ZSTD_versionNumber())
    return _Lib(dll, version) if version >= _MIN_VERSION else None


def _declare(dll: ctypes.CDLL) -> None:
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    signatures: dict[str, tuple[list[type], type | None]] = {
        "ZSTD_versionNumber": ([], ctypes.c_uint),
        "ZSTD_createCCtx": ([], vp),
        "ZSTD_freeCCtx": ([vp], sz),
        "ZSTD_CCtx_setParameter": ([vp, ctypes.c_int, ctypes.c_int], sz),
        "ZSTD_CCtx_refPrefix": ([vp, vp, sz], sz),
        "ZSTD_compress2": ([vp, vp, sz, vp, sz], sz),
        "ZSTD_compressBound": ([sz], sz),
        "ZSTD_isError": ([sz], ctypes.c_uint),
        "ZSTD_getErrorName": ([sz], ctypes.c_char_p),
        "ZSTD_createDCtx": ([], vp),
        "ZSTD_freeDCtx": ([vp], sz),
        "ZSTD_DCtx_setParameter": ([vp, ctypes.c_int, ctypes.c_int], sz),
        "ZSTD_DCtx_refPrefix": ([vp, vp, sz], sz),
        "ZSTD_decompressStream": ([vp, ctypes.c_void_p, ctypes.c_void_p], sz),
    }
    for name, (args, res) in signatures.items():
        fn = getattr(dll, name)
        fn.argtypes = args
        fn.restype = res


def backend() -> str:
    """Which encoder :func:`compress` uses here: ``libzstd x.y.z`` or ``python-zstandard``."""
    lib = _libzstd()
    if lib is None:
        return "python-zstandard"
    v = lib.version
    return f"libzstd {v // 10000}.{v // 100 % 100}.{v % 100}"


def compress(prefix: memoryview, src: memoryview, *, level: int) -> bytes:
    """One zstd frame (with content size and checksum) of ``src`` against ``prefix``.

    Both views must be contiguous bytes; writable ones (a private mmap, a bytearray) are
    passed to libzstd without a copy.
    """
    if len(src) == 0:
        raise ChangeoverError("zstd_prefix.compress needs at least one byte to compress")
    lib = _libzstd()
    if lib is None:
        return _compress_python(prefix, src, level)
    return _compress_lib(lib.dll, prefix, src, level)


def _address(view: memoryview) -> tuple[int, ctypes.Array[ctypes.c_char] | None]:
    if len(view) == 0:
        return 0, None
    array_type = ctypes.c_char * len(view)
    arr = array_type.from_buffer_copy(view) if view.readonly else array_type.from_buffer(view)
    return ctypes.addressof(arr), arr


def _check(dll: ctypes.CDLL, code: int, what: str) -> int:
    if dll.ZSTD_isError(code):
        name = dll.ZSTD_getErrorName(code).decode(errors="replace")
        raise ChangeoverError(f"zstd could not {what}: {name}", zstd_error=name)
    return code


def _compress_lib(dll: ctypes.CDLL, prefix: memoryview, src: memoryview, level: int) -> bytes:
    cap = int(dll.ZSTD_compressBound(len(src)))
    # An anonymous map commits only the pages zstd writes, so a worst-case bound costs nothing.
    dst = mmap.mmap(-1, cap)
    cctx = dll.ZSTD_createCCtx()
    if not cctx:
        dst.close()
        raise ChangeoverError("zstd could not allocate a compression context")
    pre_addr, pre_arr = _address(prefix)
    src_addr, src_arr = _address(src)
    dst_arr = (ctypes.c_char * cap).from_buffer(dst)
    try:
        # Workers first: setting it resets nothing else, but a libzstd built without threads
        # refuses it, and single-threaded is still correct, only somewhat larger.
        dll.ZSTD_CCtx_setParameter(cctx, _C_NB_WORKERS, 1)
        wlog = window_log(len(prefix) + len(src))
        for param, value, what in (
            (_C_COMPRESSION_LEVEL, level, "set the level"),
            (_C_WINDOW_LOG, wlog, "set the window"),
            (_C_ENABLE_LDM, 1, "enable long-distance matching"),
            (_C_CHECKSUM, 1, "enable checksums"),
        ):
            _check(dll, dll.ZSTD_CCtx_setParameter(cctx, param, value), what)
        if pre_addr:
            _check(dll, dll.ZSTD_CCtx_refPrefix(cctx, pre_addr, len(prefix)), "load the base")
        n = _check(
            dll,
            dll.ZSTD_compress2(cctx, ctypes.addressof(dst_arr), cap, src_addr, len(src)),
            "compress",
        )
        return dst[:n]
    finally:
        dll.ZSTD_freeCCtx(cctx)
        # The ctypes arrays pin the buffers they view; drop them before the maps close.
        del pre_arr, src_arr, dst_arr
        dst.close()


def _compress_python(prefix: memoryview, src: memoryview, level: int) -> bytes:
    span = len(prefix) + len(src)
    wlog = window_log(span)
    base = zstandard.ZstdCompressionParameters.from_level(
        level, source_size=len(src), dict_size=len(prefix)
    )
    # A dictionary is only reachable through the binary-tree tables, which reach back
    # 2**(chain_log - 1) positions: widen them to cover the prefix, within a memory cap.
    chain_log = max(base.chain_log, min(_FALLBACK_CHAIN_LOG_MAX, window_log(span) + 1))
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        source_size=len(src),
        dict_size=len(prefix),
        window_log=wlog,
        chain_log=chain_log,
        hash_log=max(base.hash_log, chain_log - 1),
        enable_ldm=True,
        write_checksum=True,
        write_content_size=True,
        write_dict_id=False,
    )
    dict_data = (
        zstandard.ZstdCompressionDict(bytes(prefix), dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        if len(prefix)
        else None
    )
    cctx = zstandard.ZstdCompressor(dict_data=dict_data, compression_params=params)
    try:
        return cctx.compress(src)
    except zstandard.ZstdError as e:
        raise ChangeoverError(f"zstd could not compress: {e}") from e


class DecodeError(ChangeoverError):
    """A frame that does not decode: corrupt, truncated, or longer than allowed."""


class _Buffer(ctypes.Structure):
    # ZSTD_inBuffer and ZSTD_outBuffer share this layout: pointer, size, position.
    _fields_ = (("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t), ("pos", ctypes.c_size_t))


def decompress(
    prefix: memoryview,
    read: Callable[[int], bytes],
    *,
    max_output: int,
    window_log_max: int,
    chunk: int = 1 << 20,
) -> Generator[bytes, None, None]:
    """Decode one frame made by :func:`compress` against ``prefix``, reading its bytes with
    ``read`` (which returns ``b""`` at the frame's end); yields the content in pieces.

    Yields at most ``max_output`` bytes, then raises if the frame holds more. zstd checks
    the frame's checksum as it ends.

    Raises:
        DecodeError: the frame is corrupt, truncated, or followed by more input.
    """
    lib = _libzstd()
    if lib is None:
        yield from _decompress_python(prefix, read, max_output, window_log_max, chunk)
        return
    dll = lib.dll
    dctx = dll.ZSTD_createDCtx()
    if not dctx:
        raise ChangeoverError("zstd could not allocate a decompression context")
    pre_addr, pre_arr = _address(prefix)
    out = bytearray(chunk)
    out_arr = (ctypes.c_char * chunk).from_buffer(out)
    try:
        _dcheck(dll, dll.ZSTD_DCtx_setParameter(dctx, _D_WINDOW_LOG_MAX, window_log_max))
        if pre_addr:
            _dcheck(dll, dll.ZSTD_DCtx_refPrefix(dctx, pre_addr, len(prefix)))
        produced = 0
        src_arr: ctypes.Array[ctypes.c_char] | None = None
        inb = _Buffer(None, 0, 0)
        outb = _Buffer(ctypes.addressof(out_arr), chunk, 0)
        full = False  # the last call filled the output: zstd may hold more without input
        while True:
            if inb.pos == inb.size and not full:
                src = read(chunk)
                if not src:
                    raise DecodeError("the frame is truncated")
                src_arr = ctypes.create_string_buffer(src, len(src))
                inb = _Buffer(ctypes.addressof(src_arr), len(src), 0)
            outb.pos = 0
            hint = _dcheck(
                dll, dll.ZSTD_decompressStream(dctx, ctypes.byref(outb), ctypes.byref(inb))
            )
            full = outb.pos == outb.size
            if outb.pos:
                produced += outb.pos
                if produced > max_output:
                    raise DecodeError(f"the frame holds more than {max_output} bytes")
                yield bytes(out[: outb.pos])
            if hint == 0:  # the frame is decoded, checksum checked, and fully flushed
                break
        if inb.pos != inb.size or read(1):
            raise DecodeError("data after the end of the frame")
        del src_arr
    finally:
        dll.ZSTD_freeDCtx(dctx)
        del pre_arr, out_arr


def _dcheck(dll: ctypes.CDLL, code: int) -> int:
    if dll.ZSTD_isError(code):
        raise DecodeError(dll.ZSTD_getErrorName(code).decode(errors="replace"))
    return code


class _Reader:
    def __init__(self, read: Callable[[int], bytes]) -> None:
        self.read = read


def _decompress_python(
    prefix: memoryview,
    read: Callable[[int], bytes],
    max_output: int,
    window_log_max: int,
    chunk: int,
) -> Iterator[bytes]:
    dict_data = None
    if len(prefix):
        # The C backend copies the dictionary in, straight from the view; others want bytes.
        content = prefix if zstandard.backend == "cext" else bytes(prefix)
        dict_data = zstandard.ZstdCompressionDict(content, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    dctx = zstandard.ZstdDecompressor(dict_data=dict_data, max_window_size=1 << window_log_max)
    produced = 0
    try:
        with dctx.stream_reader(
            cast(BinaryIO, _Reader(read)), read_size=chunk, closefd=False
        ) as reader:
            # Read one byte past the limit so an overlong frame is caught before any of
            # its excess is yielded.
            while piece := reader.read(min(chunk, max_output - produced + 1)):
                produced += len(piece)
                if produced > max_output:
                    raise DecodeError(f"the frame holds more than {max_output} bytes")
                yield piece
    except zstandard.ZstdError as e:
        raise DecodeError(str(e)) from e
