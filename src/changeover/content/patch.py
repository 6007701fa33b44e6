"""Delta patches between two versions of one file, built like ``zstd --patch-from``.

``make_patch`` compresses the new file with zstd, giving it (part of) the old file as a
prefix: zstd then codes whatever the new file shares with the old one as back-references,
found by the long-distance matcher at any distance inside the window (see
:mod:`changeover.content.zstd_prefix`). ``apply_patch`` decodes against the same old bytes,
referenced where they lie in a map of the old file (or, without libzstd, loaded into
python-zstandard as a raw-content dictionary), which is exactly what the encoder referenced.

Bounded memory. The new file is cut into segments of at most ``segment_bytes`` (256 MiB by
default), each one zstd frame against a *window* of at most ``segment_bytes`` of the old
file, so neither side ever holds more than one segment and one window. When the whole old
file fits in the window it is the window (the ``--patch-from`` case). Otherwise the window
is chosen from where the segment's content actually lies in the old file, rather than the
same offsets plus some slack: builds insert, remove and reorder assets, and a shift larger
than the slack, or a moved block, would drop out of an aligned window. Content is located
with sampled, content-defined anchors: occurrences of a short byte pattern, picked from the
old file so it recurs every ``_anchor_spacing`` bytes or so, spaced at least half that apart,
keyed by the 32 bytes that follow. An anchor sits in the same content in both files whatever
was inserted before it, so after an edit the two anchor sequences fall back into step. The
old regions around the matched anchors, heaviest first, fill the window; a segment with no
match gets the old region at the same relative position. The anchors steer only the choice
of window, never correctness: a poor choice costs bytes, not a wrong file.

Copy runs (method ``zstd-runs``). zstd codes a long unchanged stretch as one match per
block of at most 128 KiB, about 14 bytes each: 14 KB for a 128 MB file of which a few MB
changed, where a diff that says "copy these bytes" costs a few dozen (per-file HDiffPatch
measured 93 bytes over the new bytes themselves). ``make_patch(runs=True)`` finds the
stretches of the new file that are byte for byte a stretch of the old one, at least
``MIN_RUN`` long (content-defined anchors, ``RUN_SPACING`` apart, with a common offset,
then checked and extended exactly), and writes them as *copy segments*: no frame, one
range of the old file exactly as long as the segment. The rest is coded as before. Such
a patch has its own magic, so that clients older than the method refuse it by name.

Patch format (little-endian), version 1::

    magic "CHOVPTCH" (or "CHOVPTCR" with copy segments)  version u16  flags u16 (0)
    old_size u64  new_size u64  segments u32
    per segment:  new_length u64  frame_length u64  ranges u32
                  per range: old_offset u64  length u64   (concatenated: the window)
    header_crc32 u32   (of every header byte before it)
    the frames, one zstd frame per segment, in order (content size and checksum included);
    a copy segment ("CHOVPTCR" only) has frame_length 0 and no frame

``apply_patch`` checks every field against its caps and the actual old file before it
allocates or writes anything, stops any frame at its declared length, and lets zstd's
checksum vouch for each frame, so a foreign, truncated or corrupted patch raises
:class:`InvalidInput` instead of producing or overwriting anything beyond ``expected_size``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import mmap
import os
import struct
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from changeover.content import zstd_prefix
from changeover.errors import IntegrityError, InvalidInput, NotFound

MAGIC = b"CHOVPTCH"
MAGIC_RUNS = b"CHOVPTCR"
VERSION = 1
MIN_RUN = 1 << 20
"""Shorter unchanged stretches stay in zstd's frames: a copy segment and the frame it
splits cost about as much as zstd's matches over a few hundred KiB."""
RUN_SPACING = 16 << 10
"""About how far apart the anchors that find copy runs are."""
_RUN_BLOCK = 64 << 10
SEGMENT_BYTES = 256 << 20
"""Default bound on one segment of the new file and on one window of the old file."""
MAX_SEGMENT_BYTES = 1 << 30
"""``apply_patch`` refuses a patch that would need a bigger segment or window than this."""
MAX_RANGES = 64
_MAX_RANGES_READ = 4096
_FP_LEN = 32
_CHUNK = 1 << 20
_SAMPLES = 64
_SAMPLE_BYTES = 4096

_HEAD = struct.Struct("<8sHHQQI")
_SEG = struct.Struct("<QQI")
_RANGE = struct.Struct("<QQ")
_CRC = struct.Struct("<I")

Range = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Segment:
    new_length: int
    frame_length: int
    ranges: tuple[Range, ...]
    """(old offset, length) pieces of the old file, concatenated into this frame's prefix."""

    @property
    def window_bytes(self) -> int:
        return sum(length for _, length in self.ranges)

    @property
    def copy(self) -> bool:
        """A copy segment: its bytes are its one range of the old file, no frame."""
        return self.frame_length == 0


@dataclass(frozen=True, slots=True)
class PatchHeader:
    old_size: int
    new_size: int
    segments: tuple[Segment, ...]
    runs: bool = False
    """Written with ``MAGIC_RUNS``: copy segments allowed."""

    def encode(self) -> bytes:
        magic = MAGIC_RUNS if self.runs else MAGIC
        parts = [_HEAD.pack(magic, VERSION, 0, self.old_size, self.new_size, len(self.segments))]
        for s in self.segments:
            parts.append(_SEG.pack(s.new_length, s.frame_length, len(s.ranges)))
            parts.extend(_RANGE.pack(off, length) for off, length in s.ranges)
        raw = b"".join(parts)
        return raw + _CRC.pack(zlib.crc32(raw))


# -- making ------------------------------------------------------------------------------


def make_patch(
    old: Path,
    new: Path,
    out: Path,
    *,
    level: int = 19,
    segment_bytes: int = SEGMENT_BYTES,
    runs: bool = False,
) -> int:
    """Write a patch turning ``old`` into ``new`` to ``out`` (atomically); return its size.
    ``runs``: unchanged stretches of at least ``MIN_RUN`` as copy segments (``MAGIC_RUNS``);
    where there are none, the patch is a plain one (``MAGIC``), which every client applies.
    """
    if segment_bytes < 1:
        raise InvalidInput("segment_bytes must be positive")
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        old_map = _map(stack, old)
        new_map = _map(stack, new)
        if runs:
            plan = _plan_with_runs(old_map, new_map, segment_bytes)
            runs = any(copy for _, _, copy in plan)  # none found: a plain patch, for all
        else:
            plan = [(n, r, False) for n, r in _plan_segments(old_map, new_map, segment_bytes)]
        draft = PatchHeader(
            len(old_map), len(new_map), tuple(Segment(n, 0, r) for n, r, _ in plan), runs
        )
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                # The header's size is known before the frames are; their lengths are not.
                f.write(draft.encode())
                segments: list[Segment] = []
                start = 0
                for new_length, ranges, copy in plan:
                    frame = (
                        b""
                        if copy
                        else _compress_segment(
                            old_map, new_map[start : start + new_length], ranges, level
                        )
                    )
                    f.write(frame)
                    segments.append(Segment(new_length, len(frame), ranges))
                    start += new_length
                header = PatchHeader(len(old_map), len(new_map), tuple(segments), runs)
                f.seek(0)
                f.write(header.encode())
                size = f.seek(0, os.SEEK_END)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return size


def _map(stack: contextlib.ExitStack, path: Path) -> memoryview:
    f = stack.enter_context(_open(path))
    if os.fstat(f.fileno()).st_size == 0:
        return memoryview(b"")
    # A private map is writable in our address space, so libzstd can read it without a copy.
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    view = memoryview(m)
    stack.callback(_unmap, m, view)
    return view


def _unmap(m: mmap.mmap, view: memoryview) -> None:
    # After an error, slices of the map may live on in the traceback; then the map is left
    # to the garbage collector rather than masking the error with a BufferError.
    with contextlib.suppress(BufferError):
        view.release()
        m.close()


def _compress_segment(
    old: memoryview, segment: memoryview, ranges: tuple[Range, ...], level: int
) -> bytes:
    if len(ranges) == 1:
        off, length = ranges[0]
        return zstd_prefix.compress(old[off : off + length], segment, level=level)
    prefix = bytearray()
    for off, length in ranges:
        prefix += old[off : off + length]
    return zstd_prefix.compress(memoryview(prefix), segment, level=level)


def _plan_segments(
    old: memoryview, new: memoryview, segment_bytes: int, start: int = 0, end: int | None = None
) -> list[tuple[int, tuple[Range, ...]]]:
    """Segments of ``new[start:end]`` (all of it by default) and each one's window."""
    old_size, new_size = len(old), len(new)
    end = new_size if end is None else end
    if old_size <= segment_bytes:
        whole: tuple[Range, ...] = ((0, old_size),) if old_size else ()
        return [(len(piece), whole) for piece in _split(end - start, segment_bytes)]
    # Half-size segments leave half of each window for context around what the anchors
    # found: edits and moved pieces sit between anchors.
    bounds = [
        (start + s.start, start + s.stop) for s in _split(end - start, max(1, segment_bytes // 2))
    ]
    spacing = _anchor_spacing(segment_bytes)
    pattern = _pick_pattern(old, spacing)
    index: dict[bytes, list[int]] = {}
    for pos, key in _anchors(old, 0, old_size, pattern, spacing // 2):
        hits = index.setdefault(key, [])
        if len(hits) < 4:  # repeated content (padding, zeros) would swamp the index
            hits.append(pos)
    plan = []
    for lo, hi in bounds:
        found: list[int] = []
        for _, key in _anchors(new, lo, hi, pattern, spacing // 2):
            found += index.get(key, ())
        ranges = _choose_window(found, lo, hi, old_size, new_size, segment_bytes, spacing)
        plan.append((hi - lo, ranges))
    return plan


def _plan_with_runs(
    old: memoryview, new: memoryview, segment_bytes: int
) -> list[tuple[int, tuple[Range, ...], bool]]:
    """Copy segments for the runs, coded segments (with their windows) between them.

    A coded gap between two runs gets as its window the old bytes the runs around it leave
    between them, with ``GAP_CONTEXT`` (or twice the gap) on each side, not the whole old
    file: zstd indexes a frame's whole window before it codes a byte, so a pak with six
    edits cost six indexings of the whole old file (4.5 CPU-s where one plain frame took
    0.9). What moved far away is a run of its own (runs have their own offsets)."""
    plan: list[tuple[int, tuple[Range, ...], bool]] = []
    at, before = 0, None  # ``before``: where the previous run ended in the old file
    for run_start, run_end, delta in [*_runs(old, new), (len(new), len(new), None)]:
        if run_start > at:
            after = None if delta is None else run_start + delta
            window = _gap_window(len(old), before, after, run_start - at, segment_bytes)
            if window is None:
                coded = _plan_segments(old, new, segment_bytes, at, run_start)
                plan += [(n, r, False) for n, r in coded]
            else:
                plan += [(len(p), window, False) for p in _split(run_start - at, segment_bytes)]
        for piece in _split(run_end - run_start, segment_bytes):
            plan.append((len(piece), ((run_start + piece.start + (delta or 0), len(piece)),), True))
        at = run_end
        before = None if delta is None else run_end + delta
    return plan


GAP_CONTEXT = 4 << 20
"""Old bytes on each side of a coded gap's place that its window holds, at least."""


def _gap_window(
    old_size: int, before: int | None, after: int | None, gap: int, segment_bytes: int
) -> tuple[Range, ...] | None:
    """The window of a coded gap between runs ending at ``before`` and starting at
    ``after`` in the old file (``None`` at either end of the file); ``None`` where the
    ordinary window (the whole old file, or anchors) should serve: no run on either side,
    or a window as big as that anyway."""
    if before is None and after is None:
        return None
    edges = [e for e in (before, after) if e is not None]
    context = max(GAP_CONTEXT, 2 * gap)
    lo, hi = max(0, min(edges) - context), min(old_size, max(edges) + context)
    if hi - lo >= min(old_size, segment_bytes):
        return None
    return ((lo, hi - lo),)


def _runs(old: memoryview, new: memoryview) -> list[tuple[int, int, int]]:
    """(start, end, delta) of the stretches of ``new`` of at least ``MIN_RUN`` bytes equal
    to ``old[start + delta : end + delta]``, in order, not overlapping."""
    if len(new) < MIN_RUN or len(old) < MIN_RUN:
        return []
    pattern = _pick_pattern(old, RUN_SPACING)
    sample = bytes(old[: 4 * MIN_RUN])
    every = max(1, round(RUN_SPACING * sample.count(pattern) / len(sample)))
    index: dict[bytes, list[int]] = {}
    for pos, key in _sampled_anchors(old, pattern, every):
        hits = index.setdefault(key, [])
        if len(hits) < 4:
            hits.append(pos)
    # Consecutive anchors of the new file found at one offset in the old: a candidate.
    candidates: list[tuple[int, int, int]] = []
    current: list[int] | None = None  # [first, last, delta]
    for pos, key in _sampled_anchors(new, pattern, every):
        deltas = [o - pos for o in index.get(key, ())]
        if current is not None and current[2] in deltas:
            current[1] = pos
            continue
        if current is not None:
            candidates.append((current[0], current[1] + _FP_LEN, current[2]))
        current = [pos, pos, deltas[0]] if deltas else None
    if current is not None:
        candidates.append((current[0], current[1] + _FP_LEN, current[2]))
    runs: list[tuple[int, int, int]] = []
    for first, last, delta in candidates:
        for lo, hi in _equal_stretches(old, new, first, last, delta):
            floor = runs[-1][1] if runs else 0
            start = max(floor, _extend(old, new, lo, delta, -1, floor))
            end = _extend(old, new, hi, delta, 1, len(new))
            if end - start >= MIN_RUN:
                runs.append((start, end, delta))
    return runs


def _sampled_anchors(data: memoryview, pattern: bytes, every: int) -> Iterator[tuple[int, bytes]]:
    """Every occurrence of ``pattern`` whose 32 following bytes hash to 0 modulo
    ``every``: chosen by content alone, so both files pick the same ones in the same
    content wherever it lies (``_anchors`` spaces them by position, which two files
    shifted against each other need not fall back into step with)."""
    for pos, key in _anchors(data, 0, len(data), pattern, 1):
        if zlib.crc32(key) % every == 0:
            yield pos, key


def _same(old: memoryview, new: memoryview, start: int, end: int, delta: int) -> bool:
    if start < 0 or start + delta < 0 or end > len(new) or end + delta > len(old):
        return False
    return bytes(new[start:end]) == bytes(old[start + delta : end + delta])


def _equal_stretches(
    old: memoryview, new: memoryview, first: int, last: int, delta: int
) -> Iterator[tuple[int, int]]:
    """The maximal stretches of whole ``_RUN_BLOCK`` blocks in [first, last) that are equal
    at ``delta`` (an edit between two anchors that kept both breaks a candidate)."""
    start = None
    for at in range(first, last, _RUN_BLOCK):
        end = min(last, at + _RUN_BLOCK)
        if _same(old, new, at, end, delta):
            start = at if start is None else start
            continue
        if start is not None:
            yield start, at
        start = None
    if start is not None:
        yield start, last


def _extend(old: memoryview, new: memoryview, edge: int, delta: int, way: int, limit: int) -> int:
    """How far an equal stretch reaches from ``edge`` (its end going forward, its start
    going back), at most to ``limit``: doubling probes, then a binary search."""

    def equal(distance: int) -> bool:
        lo, hi = (edge, edge + distance) if way > 0 else (edge - distance, edge)
        return _same(old, new, lo, hi, delta)

    room = abs(limit - edge)
    good, bad, step = 0, room + 1, 1
    while good < room:
        probe = min(room, step)
        if not equal(probe):
            bad = probe
            break
        good, step = probe, step * 2
    while bad - good > 1:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if equal(middle) else (good, middle)
    return edge + way * good


def _split(size: int, step: int) -> list[range]:
    return [range(s, min(size, s + step)) for s in range(0, size, step)]


def _anchor_spacing(segment_bytes: int) -> int:
    # About 2048 anchors per segment: enough to see where a segment's pieces came from,
    # few enough that indexing a 10 GiB file stays a few hundred thousand dict entries.
    return max(64, segment_bytes // 2048)


def _pick_pattern(data: memoryview, spacing: int) -> bytes:
    """The rarest 1- or 2-byte pattern that still occurs about every ``spacing`` bytes."""
    step = max(1, (len(data) - _SAMPLE_BYTES) // _SAMPLES)
    singles: Counter[int] = Counter()
    pairs: Counter[tuple[int, int]] = Counter()
    total = 0
    for off in range(0, max(1, len(data) - _SAMPLE_BYTES + 1), step):
        sample = bytes(data[off : off + _SAMPLE_BYTES])
        singles.update(sample)
        pairs.update(itertools.pairwise(sample))
        total += len(sample)
    candidates = [(n / total, bytes([b])) for b, n in singles.items()]
    candidates += [(n / total, bytes(p)) for p, n in pairs.items()]
    frequent = [c for c in candidates if c[0] >= 1 / spacing]
    if frequent:
        return min(frequent, key=lambda c: (c[0], -len(c[1]), c[1]))[1]
    return max(candidates, key=lambda c: (c[0], len(c[1]), c[1]))[1]


def _anchors(
    data: memoryview, start: int, end: int, pattern: bytes, gap: int
) -> Iterator[tuple[int, bytes]]:
    """(position, next 32 bytes) of pattern occurrences in [start, end), ``gap`` apart."""
    raw = data.obj  # the mmap or bytes underneath: their find() runs in C
    if not isinstance(raw, mmap.mmap | bytes):
        raw = bytes(data)
    pos = raw.find(pattern, start, end)
    while pos != -1 and pos + _FP_LEN <= len(data):
        yield pos, bytes(data[pos : pos + _FP_LEN])
        pos = raw.find(pattern, pos + gap, end)


def _choose_window(
    hits: Sequence[int],
    start: int,
    end: int,
    old_size: int,
    new_size: int,
    budget: int,
    spacing: int,
) -> tuple[Range, ...]:
    if not hits:
        middle = (start + end) // 2 * old_size // max(1, new_size)
        lo = max(0, min(old_size - budget, middle - budget // 2))
        return ((lo, min(old_size, lo + budget) - lo),)
    # Each hit vouches for the old bytes around it. Neighbourhoods less than a few anchors
    # apart merge into one region, weighted by its hits: the hole between them is most
    # likely the same moved block with an edit that broke the anchors in it.
    regions: list[list[int]] = []
    for o in sorted(hits):
        lo, hi = max(0, o - spacing), min(old_size, o + spacing + _FP_LEN)
        if regions and lo <= regions[-1][1] + 4 * spacing:
            regions[-1][1] = max(regions[-1][1], hi)
            regions[-1][2] += 1
        else:
            regions.append([lo, hi, 1])
    chosen: list[list[int]] = []
    used = 0
    for lo, hi, _ in sorted(regions, key=lambda r: (-r[2], r[0])):
        if used + hi - lo <= budget and len(chosen) < MAX_RANGES:
            chosen.append([lo, hi])
            used += hi - lo
    if not chosen:  # one region alone is larger than the budget: take its middle
        lo, hi, _ = max(regions, key=lambda r: (r[2], -r[0]))
        lo = (lo + hi - budget) // 2
        chosen, used = [[lo, lo + budget]], budget
    # Spend what is left of the budget on context around each region (edits and inserted
    # data sit between anchors), then merge what now overlaps.
    grow = (budget - used) // (2 * len(chosen))
    merged: list[list[int]] = []
    for first, last in sorted(chosen):
        lo, hi = max(0, first - grow), min(old_size, last + grow)
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple((lo, hi - lo) for lo, hi in merged)


# -- applying ----------------------------------------------------------------------------


def read_header(
    patch: BinaryIO,
    *,
    expected_size: int | None = None,
    max_segment_bytes: int = MAX_SEGMENT_BYTES,
    runs: bool = False,
) -> PatchHeader:
    """Read and validate a patch header, leaving ``patch`` at the first frame.

    Raises:
        InvalidInput: not a patch, an unknown version, a corrupt or implausible header, or
            one for a file of another size than ``expected_size``.
    """
    raw = _read_exact(patch, _HEAD.size, "header")
    magic, version, flags, old_size, new_size, count = _HEAD.unpack(raw)
    if magic != (MAGIC_RUNS if runs else MAGIC):
        if magic in (MAGIC, MAGIC_RUNS):
            raise InvalidInput("a patch of the other zstd method (copy runs or not)")
        raise InvalidInput("not a changeover patch (bad magic)")
    if version != VERSION or flags != 0:
        raise InvalidInput(f"unsupported patch version {version} (flags {flags:#x})")
    if expected_size is not None and new_size != expected_size:
        # Checked before the segment table, whose length a garbage header could inflate.
        raise InvalidInput(f"patch makes a file of {new_size} bytes, expected {expected_size}")
    if count > new_size or (new_size and count == 0):
        raise InvalidInput(f"corrupt patch: {count} segments for {new_size} bytes")
    parts = [raw]
    segments = []
    total = 0
    for i in range(count):
        seg_raw = _read_exact(patch, _SEG.size, "segment table")
        new_length, frame_length, n_ranges = _SEG.unpack(seg_raw)
        if n_ranges > _MAX_RANGES_READ:
            raise InvalidInput(f"corrupt patch: segment {i} has {n_ranges} ranges")
        ranges_raw = _read_exact(patch, _RANGE.size * n_ranges, "segment table")
        parts += [seg_raw, ranges_raw]
        ranges = tuple(_RANGE.unpack_from(ranges_raw, k * _RANGE.size) for k in range(n_ranges))
        if any(length == 0 or off + length > old_size for off, length in ranges):
            raise InvalidInput(f"corrupt patch: segment {i} reads outside the base file")
        segment = Segment(new_length, frame_length, ranges)
        if segment.copy and not (runs and len(ranges) == 1 and ranges[0][1] == new_length):
            raise InvalidInput(f"corrupt patch: segment {i} has no frame")
        if not 0 < new_length <= max_segment_bytes or segment.window_bytes > max_segment_bytes:
            raise InvalidInput(
                f"patch segment {i} needs more than {max_segment_bytes} bytes of memory"
            )
        total += new_length
        segments.append(segment)
    (crc,) = _CRC.unpack(_read_exact(patch, _CRC.size, "header checksum"))
    if crc != zlib.crc32(b"".join(parts)) or total != new_size:
        raise InvalidInput("corrupt patch: header checksum or sizes do not match")
    return PatchHeader(old_size, new_size, tuple(segments), runs)


class Sink(Protocol):
    """Where ``apply_patch`` writes: a binary file, or anything with its ``write``."""

    def write(self, data: bytes, /) -> object: ...


def apply_patch(
    old: Path,
    patch: BinaryIO | Path,
    out: Sink,
    *,
    expected_size: int,
    expected_sha256: str | None = None,
    max_segment_bytes: int = MAX_SEGMENT_BYTES,
    runs: bool = False,
) -> None:
    """Write the file that ``patch`` makes from ``old`` to ``out``. ``runs``: the patch
    is of the copy-runs method (``MAGIC_RUNS``), and only then.

    At most ``expected_size`` bytes are ever written; memory stays within one segment and
    one window (each at most ``max_segment_bytes``). The caller checks the result's hash,
    or passes ``expected_sha256`` to have it checked here. ``old`` is memory-mapped, so it
    must not be truncated while this runs (it is the caller's own, just verified, file).

    Raises:
        InvalidInput: the patch is not one, is corrupt or truncated, is for another base
            file (size differs), or makes a file of another size.
        IntegrityError: the result does not match ``expected_sha256``.
    """
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(_open(patch)) if isinstance(patch, Path) else patch
        header = read_header(
            src, expected_size=expected_size, max_segment_bytes=max_segment_bytes, runs=runs
        )
        base = _map(stack, old)
        if len(base) != header.old_size:
            raise InvalidInput(f"patch is for a base file of {header.old_size} bytes, not {old}")
        digest = hashlib.sha256() if expected_sha256 is not None else None
        for i, segment in enumerate(header.segments):
            pieces = (
                _copied(base, segment) if segment.copy else _decode_frame(src, segment, base, i)
            )
            for chunk in pieces:
                if digest is not None:
                    digest.update(chunk)
                out.write(chunk)
        if src.read(1):
            raise InvalidInput("corrupt patch: data after the last segment")
    if digest is not None and digest.hexdigest() != expected_sha256:
        raise IntegrityError(f"patched {old.name}", str(expected_sha256), digest.hexdigest())


def _copied(base: memoryview, segment: Segment) -> Iterator[bytes]:
    [(off, length)] = segment.ranges  # checked by read_header
    for at in range(off, off + length, _CHUNK):
        yield bytes(base[at : min(off + length, at + _CHUNK)])


def _prefix(base: memoryview, ranges: tuple[Range, ...]) -> memoryview:
    """The frame's prefix: a view of the map for one range (no copy), else the pieces."""
    if len(ranges) == 1:
        off, length = ranges[0]
        return base[off : off + length]
    return memoryview(bytearray(b"".join(base[o : o + n] for o, n in ranges)))


def _decode_frame(src: BinaryIO, segment: Segment, base: memoryview, index: int) -> Iterator[bytes]:
    span = segment.window_bytes + segment.new_length
    frame = _Limited(src, segment.frame_length)
    produced = 0
    prefix = _prefix(base, segment.ranges)
    pieces = zstd_prefix.decompress(
        prefix,
        frame.read,
        max_output=segment.new_length,
        window_log_max=zstd_prefix.window_log(span),
        chunk=_CHUNK,
    )
    # Closed in this order: the decoder lets go of the prefix, then the view is released.
    with prefix, contextlib.closing(pieces):
        try:
            for chunk in pieces:
                produced += len(chunk)
                yield chunk
        except zstd_prefix.DecodeError as e:
            raise InvalidInput(f"corrupt patch: segment {index} does not decode ({e})") from e
    if produced != segment.new_length or frame.remaining:
        raise InvalidInput(
            f"corrupt patch: segment {index} makes {produced} bytes, expected {segment.new_length}"
        )


class _Limited:
    """A reader that yields exactly ``remaining`` bytes of ``src``: one frame of the patch."""

    def __init__(self, src: BinaryIO, size: int) -> None:
        self.src = src
        self.remaining = size

    def read(self, n: int = -1) -> bytes:
        n = self.remaining if n < 0 else min(n, self.remaining)
        data = self.src.read(n) if n else b""
        if len(data) < n:
            raise InvalidInput("corrupt patch: truncated")
        self.remaining -= len(data)
        return data


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist", path=str(path)) from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a directory, not a file", path=str(path)) from None


def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise InvalidInput(f"corrupt patch: truncated {what}")
    return data
