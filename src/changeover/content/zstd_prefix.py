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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import sys
from dataclasses import dataclass

import zstandard

from changeover.errors import ChangeoverError

# zstd's stable parameter numbers (zstd.h, ZSTD_cParameter).
_C_COMPRESSION_LEVEL = 100
_C_WINDOW_LOG = 101
_C_ENABLE_LDM = 160
_C_CHECKSUM = 201
_C_NB_WORKERS = 400
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
