"""Making and applying a patch of any method: the one door the publisher, the launcher and
the agents go through, so that every method is applied everywhere and an unknown one is
refused in one place.

A patch's method is named twice: in the signed index that lists it
(:class:`~changeover.content.patch_index.PatchEntry`), which is what a client goes by, and
in the patch's own magic, which the method's reader checks (a patch of another method
fails closed as corrupt).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Protocol

from changeover.content import hdiff, patch
from changeover.content.patch_index import PatchMethod, known_method
from changeover.errors import InvalidInput, NotFound, UnsupportedPatchMethod


class Sink(Protocol):
    """Where a patch is applied to: a binary file, or anything with its ``write``."""

    def write(self, data: bytes, /) -> object: ...


_HDIFF_CODINGS: dict[PatchMethod, hdiff.Coding] = {
    PatchMethod.HDIFFPATCH: hdiff.ZSTD,
    PatchMethod.HDIFFPATCH_LZMA2: hdiff.LZMA2,
}
_ZSTD_RUNS = {PatchMethod.ZSTD: False, PatchMethod.ZSTD_RUNS: True}
_MAGICS = {patch.MAGIC: PatchMethod.ZSTD, patch.MAGIC_RUNS: PatchMethod.ZSTD_RUNS} | {
    hdiff.MAGICS[coding]: method for method, coding in _HDIFF_CODINGS.items()
}


def whole_in_memory(method: str) -> bool:
    """Whether a patch of ``method`` is applied whole in memory, so needs the result's
    SHA-256 (HDiffPatch's, see :func:`apply`)."""
    return method in _HDIFF_CODINGS


def preload() -> None:
    """Load, in the background, what applying a patch of any method needs and is slow
    to load (:func:`hdiff.preload`)."""
    hdiff.preload()


def check_method(method: str, path: str | None = None) -> PatchMethod:
    """``method`` as one this client applies.

    Raises:
        UnsupportedPatchMethod: it is not.
    """
    if not known_method(method):
        raise UnsupportedPatchMethod(method, path)
    return PatchMethod(method)


def make(
    method: str,
    old: Path,
    new: Path,
    out: Path,
    *,
    level: int,
    segment_bytes: int = patch.SEGMENT_BYTES,
    reuse: Path | None = None,
) -> int:
    """Write a patch of ``method`` turning ``old`` into ``new`` to ``out``; its size.

    ``reuse``, an HDiffPatch patch of the same pair already made, spares an HDiffPatch
    method making the diff again (only its coding differs). A ``zstd-runs`` patch that
    found no unchanged stretch long enough is a plain ``zstd`` one, which every client
    applies: what was written is :func:`method_of` ``out``.

    Raises:
        UnsupportedPatchMethod: an unknown method.
        InvalidInput: the files are beyond the method's bounds.
    """
    chosen = check_method(method)
    if chosen in _HDIFF_CODINGS:
        coding = _HDIFF_CODINGS[chosen]
        return hdiff.make_patch(old, new, out, level=level, coding=coding, reuse=reuse)
    return patch.make_patch(
        old, new, out, level=level, segment_bytes=segment_bytes, runs=_ZSTD_RUNS[chosen]
    )


def apply(
    method: str,
    old: Path,
    src: BinaryIO | Path,
    out: Sink,
    *,
    expected_size: int,
    expected_sha256: str | None = None,
    sink_checks: bool = False,
) -> None:
    """Write the file that the patch ``src`` of ``method`` makes from ``old`` to ``out``.

    An unknown method is refused before ``src`` is read. Each method checks the patch's
    header against its caps before it writes anything and never writes more than
    ``expected_size`` bytes. An HDiffPatch patch needs ``expected_sha256`` and writes
    nothing unless the whole result has it (its memory bound:
    :mod:`changeover.content.hdiff`); a zstd one streams in segments, checks
    ``expected_sha256`` (if given) at the end, and may leave a partial output on error, for
    the caller's temporary file. ``sink_checks``: ``out`` checks the SHA-256 of what it
    is given and keeps nothing otherwise, so an HDiffPatch result is not hashed twice.

    Raises:
        UnsupportedPatchMethod: this client does not know ``method``.
        InvalidInput: the patch is corrupt, of another method, or for another base.
        IntegrityError: the result does not match ``expected_sha256``.
    """
    name = src.name if isinstance(src, Path) else None
    chosen = check_method(method, name)
    if chosen in _HDIFF_CODINGS:
        if expected_sha256 is None:
            raise InvalidInput("an hdiffpatch patch is applied only against its result's SHA-256")
        hdiff.apply_patch(
            old,
            src,
            out,
            expected_size=expected_size,
            expected_sha256=expected_sha256,
            coding=_HDIFF_CODINGS[chosen],
            sink_checks=sink_checks,
        )
    else:
        patch.apply_patch(
            old,
            src,
            out,
            expected_size=expected_size,
            expected_sha256=expected_sha256,
            runs=_ZSTD_RUNS[chosen],
        )


def new_size(method: str, path: Path) -> int:
    """The size of the file a patch makes, from its validated header.

    Raises:
        UnsupportedPatchMethod: an unknown method.
        InvalidInput: the header is corrupt.
    """
    chosen = check_method(method, path.name)
    with _open(path) as f:
        if chosen in _HDIFF_CODINGS:
            return hdiff.read_header(f, coding=_HDIFF_CODINGS[chosen]).new_size
        return patch.read_header(f, runs=_ZSTD_RUNS[chosen]).new_size


def method_of(path: Path) -> PatchMethod:
    """The method of a stored patch, by its magic.

    Raises:
        InvalidInput: the file is not a patch of a known method.
    """
    with _open(path) as f:
        magic = f.read(8)
    found = _MAGICS.get(magic)
    if found is None:
        raise InvalidInput(f"{path.name} is not a patch of a known method")
    return found


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist", path=str(path)) from None
