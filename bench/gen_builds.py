"""A seeded series of four game-like builds, N-3 … N, for the delta-delivery benchmark.

Each build holds what real game builds hold, and each next build changes it the way a real
build pipeline does, because that is what decides how well any delta scheme does:

* ``Game/Binaries/Linux/Game``: a native executable made from a real ELF of this system
  (``/usr/bin/python3.11`` by default), "recompiled" per build: a few functions grow or
  shrink, so everything after them shifts, and the relative calls, RIP-relative loads and
  absolute pointers that cross an edit are re-linked (the scattered 4-byte changes
  throughout the file that defeat block-matching); the next segment moves by whole pages
  and the GNU build-id changes.
* ``Game/Binaries/Linux/lib<name>-<hash>.so``: shared libraries from real system ``.so``
  files, recompiled the same way with fewer edits and renamed after their new content.
* ``Game/Content/Paks/*.pak``: archives of many entries, some zlib-compressed one by one
  (a change inside one re-codes the rest of that entry), some stored; each build inserts
  entries in the middle (shifting every later entry and rewriting the index), changes
  some and drops one now and then.
* ``Game/Scripts/**``: hundreds of small Lua/JSON/INI files; a few are edited, added and
  removed per build.
* ``Game/Content/Movies/Cinematics.bulk``: one big archive (1.024 GB by default) of
  mostly incompressible media, where a few regions are rewritten, one is inserted and
  one removed per build.

Unchanged files are hard links to the previous build's file and keep its mtime (the
build that produced a content dates it), so mtime-based tools see exactly what changed.
Bytes come from AES-CTR keyed by the seed (fast and the same on every run); the only
input from outside is the system ELFs, so a seed gives the same series on the same OS.

Run ``python bench/gen_builds.py OUT --quick`` to look at one; the benchmark imports it.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import os
import random
import re
import shutil
import struct
import sys
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MB = 1_000_000
KIB = 1024
BUILD_NAMES = ("N-3", "N-2", "N-1", "N")
EPOCH = 1_767_225_600
"""2026-01-01 UTC: the mtime of N-3's files; each later build is one day later."""
DAY = 86_400
CHUNK = 8 << 20
"""Large files are generated and copied in pieces of this size: memory stays flat."""
PAGE = 4096

EXE_PATH = "Game/Binaries/Linux/Game"
LIB_DIR = "Game/Binaries/Linux"
PAK_DIR = "Game/Content/Paks"
SCRIPT_DIR = "Game/Scripts"
ARCHIVE_PATH = "Game/Content/Movies/Cinematics.bulk"
VERSION_PATH = "Game/Build.version"

EXE_CANDIDATES = ("/usr/bin/python3.11", "/usr/bin/python3", "/bin/bash")
LIB_NAMES = ("engine", "render", "physics", "audio", "net", "ui")
LIB_CANDIDATES = (
    "libcrypto.so.3",
    "libstdc++.so.6",
    "libsqlite3.so.0",
    "libgnutls.so.30",
    "libicuuc.so.72",
    "libxml2.so.2",
    "libc.so.6",
)
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")


@dataclass(frozen=True)
class Sizes:
    """How big each part of a build is."""

    archive_bytes: int = 1024 * MB
    pak_count: int = 3
    pak_bytes: int = 64 * MB
    """Per pak, about: entries are added until a pak reaches it."""
    scripts: int = 800
    libs: int = 4
    elf_cap: int | None = None
    """At most this many bytes of each system ELF (None: all of it)."""

    @classmethod
    def quick(cls) -> Sizes:
        """Seconds to generate; still every kind of file and change."""
        return cls(archive_bytes=8 * MB, pak_count=2, pak_bytes=2 * MB, scripts=80, elf_cap=1 << 20)

    @classmethod
    def tiny(cls) -> Sizes:
        """For unit tests: a build of about 1 MB."""
        return cls(
            archive_bytes=256 * KIB,
            pak_count=2,
            pak_bytes=192 * KIB,
            scripts=40,
            libs=3,
            elf_cap=96 * KIB,
        )


@dataclass
class Step:
    """What changed from one build to the next."""

    exe_edits: int = 0
    exe_refs_changed: int = 0
    renamed_libs: list[tuple[str, str]] = field(default_factory=list)
    lib_refs_changed: int = 0
    pak_inserted: list[str] = field(default_factory=list)
    """``pak/entry`` names."""
    pak_changed: list[str] = field(default_factory=list)
    pak_removed: list[str] = field(default_factory=list)
    scripts_edited: list[str] = field(default_factory=list)
    scripts_added: list[str] = field(default_factory=list)
    scripts_removed: list[str] = field(default_factory=list)
    archive_regions: list[tuple[str, int, int]] = field(default_factory=list)
    """(``overwrite`` | ``insert`` | ``delete``, offset in the old archive, bytes)."""


@dataclass
class Series:
    """The generated builds, oldest first, and the changes between them."""

    root: Path
    builds: list[Path]
    steps: list[Step]
    """``steps[i]`` turns ``builds[i]`` into ``builds[i + 1]``."""
    sources: dict[str, str]
    """Which system file each binary was made from."""
    sizes: Sizes

    def files(self, index: int) -> dict[str, int]:
        """Relative path → size of every file of one build."""
        root = self.builds[index]
        return {
            p.relative_to(root).as_posix(): p.stat().st_size
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }


# -- deterministic bytes -------------------------------------------------------------------


def _rng(seed: int, *labels: object) -> random.Random:
    # A string seed is hashed with SHA-512 by random.Random: stable across runs and
    # unaffected by PYTHONHASHSEED.
    return random.Random(":".join(map(str, (seed, *labels))))


class KeyStream:
    """Pseudo-random bytes from AES-CTR: about 20x faster than ``random.randbytes``."""

    def __init__(self, *labels: object) -> None:
        key = hashlib.sha256(":".join(map(str, labels)).encode()).digest()
        self._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def read(self, n: int) -> bytes:
        return self._enc.update(bytes(n))


# Maps every byte onto 16 values, skewed: zlib then finds the 2-3x of real uncompressed
# asset data (meshes, tables), not the nothing it finds in random bytes.
_LOW_ENTROPY = bytes((b * 7 + (b >> 4)) % 16 if b < 192 else b % 3 for b in range(256))


def _asset_bytes(n: int, *labels: object, compressible: bool) -> bytes:
    data = KeyStream(*labels).read(n)
    return data.translate(_LOW_ENTROPY) if compressible else data


# -- native code ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Binary:
    """Machine code and where its code region is (file offsets)."""

    data: bytes
    text: tuple[int, int]
    base: int
    """Virtual address minus file offset of the code (0 for a position-independent file)."""


def _section(data: bytes, name: bytes) -> tuple[int, int, int] | None:
    """(offset, size, address) of an ELF64 little-endian section, if there is one."""
    if data[:6] != b"\x7fELF\x02\x01" or len(data) < 64:
        return None
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shoff == 0 or shoff + shnum * shentsize > len(data) or shstrndx >= shnum:
        return None

    def header(i: int) -> tuple[int, int, int, int]:
        at = shoff + i * shentsize
        (name_off,) = struct.unpack_from("<I", data, at)
        addr, offset, size = struct.unpack_from("<QQQ", data, at + 0x10)
        return name_off, addr, offset, size

    strtab = header(shstrndx)
    for i in range(shnum):
        name_off, addr, offset, size = header(i)
        start = strtab[2] + name_off
        if data[start : start + len(name) + 1] == name + b"\0":
            return offset, size, addr
    return None


def load_binary(path: Path, cap: int | None) -> Binary:
    """A real ELF's bytes, cut to at most ``cap`` bytes around its code when asked."""
    data = path.read_bytes()
    found = _section(data, b".text")
    if found is None:  # not an ELF we can read: treat its middle as the code
        start, end, base = len(data) // 10, len(data) * 6 // 10, 0
    else:
        start, end, base = found[0], found[0] + found[1], found[2] - found[0]
    if cap is not None and len(data) > cap:
        # Keep the headers and as much code as fits: code is what a recompile changes.
        head = min(start, cap // 4)
        body = data[start : start + cap - head]
        return Binary(data[:head] + body, (head, head + len(body)), 0)
    return Binary(data, (start, end), base)


_REL_CALL = re.compile(rb"[\xe8\xe9]")
"""call rel32 / jmp rel32."""
_RIP_REL = re.compile(
    rb"[\x48\x4c][\x03\x2b\x33\x39\x3b\x89\x8b\x8d][\x05\x0d\x15\x1d\x25\x2d\x35\x3d]"
)
"""REX.W mov/lea/add/sub/xor/cmp with a [rip + disp32] operand."""


@dataclass(frozen=True)
class _Edit:
    at: int
    removed: int
    inserted: bytes


class _Relocation:
    """Maps offsets of the old file to the new one, given sorted non-overlapping edits."""

    def __init__(self, edits: list[_Edit]) -> None:
        self.edits = edits
        self.starts = [e.at for e in edits]
        self.shift: list[int] = []  # total shift after each edit
        total = 0
        for e in edits:
            total += len(e.inserted) - e.removed
            self.shift.append(total)

    def map(self, x: int) -> int | None:
        """Where old offset ``x`` is now; None if the edit that removed it rewrote it."""
        i = bisect.bisect_right(self.starts, x) - 1
        if i < 0:
            return x
        e = self.edits[i]
        if x < e.at + e.removed:
            return None
        return x + self.shift[i]

    def map_target(self, x: int) -> int:
        """Like ``map``, but a target inside rewritten code lands on the new code's start."""
        new = self.map(x)
        if new is not None:
            return new
        i = bisect.bisect_right(self.starts, x) - 1
        return self.edits[i].at + (self.shift[i - 1] if i else 0)


_BUILD_ID = b"\x04\x00\x00\x00\x14\x00\x00\x00\x03\x00\x00\x00GNU\x00"


def recompile(binary: Binary, rng: random.Random, n_edits: int) -> tuple[Binary, int, int]:
    """What a small source change and a relink do to ``binary``.

    ``n_edits`` functions change size (grow, shrink or are rewritten) at random places in
    the code; the data after the code moves by whole pages, as segments are page-aligned;
    every rel32 call/jmp, RIP-relative operand and absolute pointer whose target moved by a
    different amount than itself is rewritten, and so is the GNU build-id.

    Returns the new binary, how many functions changed and how many cross-references
    were rewritten.
    """
    data = binary.data
    ts, te = binary.text
    span = te - ts
    edits: list[_Edit] = []
    places = sorted(rng.sample(range(ts, te - 4096), n_edits)) if span > 8192 else []
    for at in places:
        if edits and at < edits[-1].at + edits[-1].removed + 1024:
            continue  # keep edits apart, as distinct functions are
        removed = rng.choice((0, rng.randint(16, 512)))
        length = rng.randint(16, 1024) if removed == 0 else max(0, removed + rng.randint(-64, 64))
        donor = rng.randrange(ts, te - length) if length else ts
        inserted = bytearray(data[donor : donor + length])  # new code looks like old code
        for _ in range(length // 64):
            inserted[rng.randrange(length)] = rng.randrange(256)
        edits.append(_Edit(at, removed, bytes(inserted)))
    functions = len(edits)
    growth = sum(len(e.inserted) - e.removed for e in edits)
    if te < len(data):
        edits.append(_Edit(te, 0, bytes(-growth % PAGE)))  # the next segment starts on a page
    reloc = _Relocation(edits)

    out = bytearray()
    pos = 0
    for e in edits:
        out += data[pos : e.at]
        out += e.inserted
        pos = e.at + e.removed
    out += data[pos:]

    changed = 0

    def relink(field_at: int, next_at: int, target: int) -> None:
        nonlocal changed
        new_field, new_next = reloc.map(field_at), reloc.map(next_at)
        if new_field is None or new_next is None:
            return  # inside rewritten code: already new bytes
        disp = reloc.map_target(target) - new_next
        if not -(1 << 31) <= disp < 1 << 31:
            return
        old_disp = target - next_at
        if disp != old_disp:
            struct.pack_into("<i", out, new_field, disp)
            changed += 1

    size = len(data)
    for m in _REL_CALL.finditer(data, ts, te - 5):
        i = m.start()
        disp = int.from_bytes(data[i + 1 : i + 5], "little", signed=True)
        target = i + 5 + disp
        if ts <= target < te:  # a call that lands in the code: almost surely a real one
            relink(i + 1, i + 5, target)
    for m in _RIP_REL.finditer(data, ts, te - 7):
        i = m.start()
        disp = int.from_bytes(data[i + 3 : i + 7], "little", signed=True)
        target = i + 7 + disp
        if te <= target < size:  # read-only data and data, after the code
            relink(i + 3, i + 7, target)
    # Absolute pointers into the file, in the data after the code (vtables, relocations).
    lo, hi = binary.base + ts, binary.base + size
    first = te + (-te % 8)
    last = first + (size - first) // 8 * 8
    for n, (value,) in enumerate(struct.iter_unpack("<Q", data[first:last])):
        if lo <= value < hi:
            at = first + 8 * n
            new_at = reloc.map(at)
            new_value = binary.base + reloc.map_target(value - binary.base)
            if new_at is not None and new_value != value:
                struct.pack_into("<Q", out, new_at, new_value)
                changed += 1

    note = out.find(_BUILD_ID)
    if note >= 0:
        at = note + len(_BUILD_ID)
        out[at : at + 20] = rng.randbytes(20)
    new = Binary(bytes(out), (ts, te + growth), binary.base)
    return new, functions, changed


# -- pak archives --------------------------------------------------------------------------

PAK_MAGIC = b"GPAK"
PAK_FOOTER = b"GPAKIDX\0"
STORED, ZLIB = 0, 1
_ENTRY_HEAD = struct.Struct("<QQI20s")
"""stored size, raw size, method, SHA-1 of the stored bytes (repeated before each entry)."""

_FOLDERS = (
    "Characters/Hero",
    "Characters/Enemies",
    "Environment/Forest",
    "Environment/City",
    "Weapons",
    "UI/Icons",
    "Audio/SFX",
    "Audio/Music",
    "VFX",
    "Maps/Arena",
)
_ASSET_WORDS = (
    "Albedo",
    "Normal",
    "Rough",
    "Mesh",
    "Anim",
    "Rig",
    "Decal",
    "Atlas",
    "Cue",
    "Wave",
    "Blend",
    "Mat",
    "Inst",
    "Lod",
    "Spline",
    "Foliage",
)
# (extension, compressed?, smallest, largest) as fractions of a pak's largest entry.
_KINDS = (
    ("uasset", True, 1 / 256, 1 / 8),
    ("uexp", True, 1 / 64, 1 / 2),
    ("ubulk", False, 1 / 8, 1),
)


@dataclass
class PakEntry:
    name: str
    seed: str
    raw_size: int
    compressed: bool
    edits: tuple[tuple[float, int, bool, str], ...] = ()
    """(where as a fraction, bytes, insert rather than overwrite, seed) per change."""

    def raw(self) -> bytes:
        data = _asset_bytes(self.raw_size, self.seed, compressible=self.compressed)
        for where, length, insert, seed in self.edits:
            at = int(where * len(data))
            new = _asset_bytes(length, seed, compressible=self.compressed)
            data = data[:at] + new + data[at + (0 if insert else length) :]
        return data

    def stored(self) -> tuple[bytes, int]:
        raw = self.raw()
        return (zlib.compress(raw, 6), len(raw)) if self.compressed else (raw, len(raw))


class Pak:
    """One pak: entries sorted by name; what each one's stored bytes are, per build."""

    def __init__(self, name: str, seed: int, target_bytes: int) -> None:
        self.name = name
        self.seed = seed
        self.largest = max(4 * KIB, min(1 << 20, target_bytes // 16))
        rng = _rng(seed, name, "layout")
        self.entries: list[PakEntry] = []
        names: set[str] = set()
        total = 0
        while total < target_bytes:
            entry = self._new_entry(rng, names, len(self.entries))
            self.entries.append(entry)
            # Compressed entries end up at about half their raw size.
            total += entry.raw_size // (2 if entry.compressed else 1)
        self.entries.sort(key=lambda e: e.name)
        self.location: dict[str, tuple[int, int]] = {}
        """Entry name → (offset, length) of its header and stored bytes in the last file."""
        self.path: Path | None = None

    def _new_entry(self, rng: random.Random, names: set[str], n: int, folder: str = "") -> PakEntry:
        ext, compressed, lo, hi = rng.choice(_KINDS)
        folder = folder or rng.choice(_FOLDERS)
        while True:
            stem = (
                f"{rng.choice(_ASSET_WORDS)}_{rng.choice(_ASSET_WORDS)}_{rng.randrange(10000):04d}"
            )
            name = f"Game/{folder}/{stem}.{ext}"
            if name not in names:
                names.add(name)
                break
        size = int(self.largest * rng.uniform(lo, hi)) + 64
        return PakEntry(name, f"{self.seed}:{self.name}:{name}:{n}", size, compressed)

    def evolve(self, rng: random.Random, step: Step) -> None:
        """The next build's pak: entries inserted mid-way, some changed, maybe one gone."""
        names = {e.name for e in self.entries}
        n = len(self.entries)
        for _ in range(rng.randint(2, 4)):
            # Next to an existing asset of the middle 80 %, so it sorts into the middle.
            neighbour = self.entries[rng.randrange(n // 10, max(n // 10 + 1, n * 9 // 10))]
            folder = neighbour.name.split("/", 1)[1].rsplit("/", 1)[0]
            entry = self._new_entry(rng, names, n + rng.randrange(1 << 30), folder)
            self.entries.append(entry)
            step.pak_inserted.append(f"{self.name}/{entry.name}")
        for entry in rng.sample(self.entries[:n], min(n, max(2, n // 30))):
            length = rng.randint(64, max(64, entry.raw_size // 20))
            edit = (rng.random(), length, rng.random() < 0.3, f"{entry.seed}:{rng.random()}")
            entry.edits = (*entry.edits, edit)
            step.pak_changed.append(f"{self.name}/{entry.name}")
        if n > 8 and rng.random() < 0.5:
            edited = {e.name for e in self.entries if e.edits}
            gone = rng.choice([e for e in self.entries[:n] if e.name not in edited])
            self.entries.remove(gone)
            step.pak_removed.append(f"{self.name}/{gone.name}")
        self.entries.sort(key=lambda e: e.name)

    def write(self, path: Path, changed: set[str]) -> None:
        """Write the pak; entries not in ``changed`` are copied from the previous file."""
        # zlib releases the GIL: compress the changed entries on every core.
        todo = [e for e in self.entries if e.name in changed or e.name not in self.location]
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            fresh = dict(zip((e.name for e in todo), pool.map(PakEntry.stored, todo), strict=True))
        location: dict[str, tuple[int, int]] = {}
        index = bytearray()
        previous = open(self.path, "rb") if self.path is not None else None  # noqa: SIM115
        try:
            with open(path, "wb") as out:
                out.write(PAK_MAGIC + struct.pack("<II", 3, len(self.entries)))
                for e in self.entries:
                    offset = out.tell()
                    if e.name in fresh:
                        stored, raw_size = fresh[e.name]
                        method = ZLIB if e.compressed else STORED
                        head = _ENTRY_HEAD.pack(
                            len(stored), raw_size, method, hashlib.sha1(stored).digest()
                        )
                        out.write(head + stored)
                        record = head
                    else:
                        assert previous is not None
                        at, length = self.location[e.name]
                        previous.seek(at)
                        blob = previous.read(length)
                        out.write(blob)
                        record = blob[: _ENTRY_HEAD.size]
                    location[e.name] = (offset, out.tell() - offset)
                    name = e.name.encode()
                    index += struct.pack("<H", len(name)) + name
                    index += struct.pack("<Q", offset) + record
                index_at = out.tell()
                out.write(index)
                out.write(PAK_FOOTER + struct.pack("<QQ", index_at, len(index)))
                out.write(hashlib.sha1(index).digest())
        finally:
            if previous is not None:
                previous.close()
        self.location = location
        self.path = path


def read_pak_index(path: Path) -> dict[str, tuple[int, int, int, int]]:
    """Entry name → (offset, stored size, raw size, method), read from a pak's index."""
    with open(path, "rb") as f:
        f.seek(-(len(PAK_FOOTER) + 16 + 20), os.SEEK_END)
        footer = f.read(len(PAK_FOOTER) + 16)
        if footer[: len(PAK_FOOTER)] != PAK_FOOTER:
            raise ValueError(f"{path} is not a pak")
        index_at, index_len = struct.unpack_from("<QQ", footer, len(PAK_FOOTER))
        f.seek(index_at)
        index = f.read(index_len)
    out: dict[str, tuple[int, int, int, int]] = {}
    pos = 0
    while pos < len(index):
        (n,) = struct.unpack_from("<H", index, pos)
        name = index[pos + 2 : pos + 2 + n].decode()
        pos += 2 + n
        (offset,) = struct.unpack_from("<Q", index, pos)
        stored, raw, method, _ = _ENTRY_HEAD.unpack_from(index, pos + 8)
        pos += 8 + _ENTRY_HEAD.size
        out[name] = (offset, stored, raw, method)
    return out


# -- scripts -------------------------------------------------------------------------------

_VOCABULARY = (
    "actor angle armor attack bone camera cooldown damage enemy entity event float frame "
    "health item level light loot material mesh npc player quest radius reward scale "
    "shader skill sound spawn speed state target texture timer trigger wave weapon zone"
)
_WORDS = _VOCABULARY.split()
_SCRIPT_DIRS = ("ai", "ui", "quests", "items", "levels", "abilities", "config", "dialogue")


def _script_line(rng: random.Random, ext: str) -> str:
    a, b, c = rng.choice(_WORDS), rng.choice(_WORDS), rng.choice(_WORDS)
    n = rng.randint(0, 999)
    if ext == "lua":
        return rng.choice(
            (
                f"local {a}_{b} = {n}",
                f"function {a}.on_{b}({c}) return {c}.{a} * {n / 100:.2f} end",
                f"if {a}.{b} > {n} then {c}:{b}({a}) end",
                f"{a}.{b}_{c} = {{ {b} = {n}, {c} = '{a}' }}",
            )
        )
    if ext == "json":
        return f'  "{a}_{b}": {{"{c}": {n}, "scale": {rng.random():.3f}}},'
    return f"{a}.{b}_{c}={n}"


def _script_text(rng: random.Random, ext: str, tag: str) -> str:
    lines = [_script_line(rng, ext) for _ in range(rng.randint(20, 200))]
    head = {"lua": f"-- {tag}", "json": "{", "ini": f"; {tag}"}[ext]
    tail = ['  "id": "' + tag + '"', "}"] if ext == "json" else []
    return "\n".join([head, *lines, *tail]) + "\n"


class Scripts:
    def __init__(self, seed: int, count: int) -> None:
        rng = _rng(seed, "scripts")
        self.seed = seed
        self.files: dict[str, str] = {}
        for i in range(count):
            self._add(rng, i)
        self.changed: set[str] = set(self.files)

    def _add(self, rng: random.Random, i: int) -> str:
        ext = ("lua", "lua", "json", "ini")[i % 4]
        folder = f"{SCRIPT_DIR}/{_SCRIPT_DIRS[i % len(_SCRIPT_DIRS)]}"
        while (rel := f"{folder}/{rng.choice(_WORDS)}_{i:04d}.{ext}") in self.files:
            i += 1
        self.files[rel] = _script_text(rng, ext, rel)
        return rel

    def evolve(self, rng: random.Random, step: Step) -> None:
        self.changed = set()
        names = sorted(self.files)
        for rel in rng.sample(names, max(3, len(names) // 100)):
            lines = self.files[rel].splitlines()
            ext = rel.rsplit(".", 1)[1]
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(1, max(2, len(lines) - 2))
                if rng.random() < 0.5:
                    lines[at] = _script_line(rng, ext)
                else:
                    lines.insert(at, _script_line(rng, ext))
            self.files[rel] = "\n".join(lines) + "\n"
            self.changed.add(rel)
            step.scripts_edited.append(rel)
        gone = rng.choice(sorted(set(names) - self.changed))
        del self.files[gone]
        step.scripts_removed.append(gone)
        for _ in range(2):
            rel = self._add(rng, len(names) + rng.randrange(1 << 20))
            self.changed.add(rel)
            step.scripts_added.append(rel)


# -- the big archive -----------------------------------------------------------------------


def _archive_block(seed: int, index: int, n: int) -> bytes:
    # One block in ten is uncompressed table data, the rest compressed media.
    return _asset_bytes(n, seed, "archive", index, compressible=index % 10 == 3)


def write_archive(path: Path, size: int, seed: int) -> None:
    with open(path, "wb") as f:
        for i, at in enumerate(range(0, size, CHUNK)):
            f.write(_archive_block(seed, i, min(CHUNK, size - at)))


def evolve_archive(old: Path, new: Path, rng: random.Random, seed: int, step: Step) -> None:
    """Copy ``old`` to ``new`` with a few regions rewritten, one inserted, one removed."""
    size = old.stat().st_size
    largest = max(4 * KIB, min(1 << 20, size // 64))
    edits: list[tuple[int, int, int]] = []  # (offset, bytes removed, bytes inserted)
    for kind in ("overwrite", "overwrite", "overwrite", "insert", "delete"):
        for _ in range(100):  # find a place that does not touch another edit
            length = rng.randint(largest // 16, largest)
            at = rng.randrange(0, size - length)
            if all(at + length < a or at > a + r + i for a, r, i in edits):
                break
        removed = {"overwrite": length, "insert": 0, "delete": length}[kind]
        inserted = 0 if kind == "delete" else length
        edits.append((at, removed, inserted))
        step.archive_regions.append((kind, at, length))
    edits.sort()
    with open(old, "rb") as src, open(new, "wb") as dst:
        pos = 0
        for n, (at, removed, inserted) in enumerate(edits):
            _copy_range(src, dst, pos, at - pos)
            stream = KeyStream(seed, "archive-edit", at, n, rng.random())
            for left in _pieces(inserted):
                dst.write(stream.read(left))
            pos = at + removed
        _copy_range(src, dst, pos, size - pos)


def _pieces(n: int) -> Iterator[int]:
    while n > 0:
        yield min(n, CHUNK)
        n -= CHUNK


def _copy_range(src: BinaryIO, dst: BinaryIO, at: int, n: int) -> None:
    src.seek(at)
    for piece in _pieces(n):
        dst.write(src.read(piece))


# -- the series ----------------------------------------------------------------------------


def _system_file(candidates: tuple[str, ...], dirs: tuple[str, ...] = ("",)) -> list[Path]:
    found: list[Path] = []
    for name in candidates:
        for d in dirs:
            p = Path(d, name) if d else Path(name)
            if p.is_file() and p.resolve() not in {f.resolve() for f in found}:
                found.append(p)
                break
    return found


def _lib_name(stem: str, data: bytes) -> str:
    return f"lib{stem}-{hashlib.sha256(data).hexdigest()[:6]}.so"


class _Writer:
    """Writes one build beside the previous one, linking what did not change."""

    def __init__(self, root: Path, previous: Path | None, index: int) -> None:
        self.root, self.previous = root, previous
        self.mtime = EPOCH + index * DAY
        root.mkdir(parents=True)

    def path(self, rel: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def keep(self, rel: str) -> None:
        assert self.previous is not None
        os.link(self.previous / rel, self.path(rel))  # same inode: same bytes and mtime

    def write(self, rel: str, data: bytes, mode: int = 0o644) -> None:
        p = self.path(rel)
        p.write_bytes(data)
        self.stamp(rel, mode)

    def stamp(self, rel: str, mode: int = 0o644) -> None:
        p = self.root / rel
        p.chmod(mode)
        os.utime(p, (self.mtime, self.mtime))

    def finish(self) -> None:
        for d in sorted((p for p in self.root.rglob("*") if p.is_dir()), reverse=True):
            os.utime(d, (self.mtime, self.mtime))
        os.utime(self.root, (self.mtime, self.mtime))


def generate(
    out: Path,
    sizes: Sizes | None = None,
    seed: int = 1,
    *,
    exe_source: Path | None = None,
    log: bool = False,
) -> Series:
    """Write builds ``out/N-3`` … ``out/N`` (``out`` must not hold them yet)."""
    sizes = sizes or Sizes()
    exe_src = exe_source or next(iter(_system_file(EXE_CANDIDATES)), Path(sys.executable))
    lib_srcs = _system_file(LIB_CANDIDATES, LIB_DIRS)[: sizes.libs]
    exe = load_binary(exe_src.resolve(), sizes.elf_cap)
    sources = {EXE_PATH: str(exe_src)}
    libs: dict[str, Binary] = {}
    for i, stem in enumerate(LIB_NAMES[: sizes.libs]):
        if i < len(lib_srcs):
            libs[stem] = load_binary(lib_srcs[i].resolve(), sizes.elf_cap)
            sources[f"lib{stem}"] = str(lib_srcs[i])
        else:  # no such library here: a slice of the executable's code stands in
            ts, te = exe.text
            part = (te - ts) // (sizes.libs + 1)
            piece = exe.data[ts + i * part : ts + (i + 1) * part]
            libs[stem] = Binary(piece, (0, len(piece)), 0)
            sources[f"lib{stem}"] = f"{exe_src} (code slice {i})"
    paks = [Pak(f"pakchunk{i}-Linux.pak", seed, sizes.pak_bytes) for i in range(sizes.pak_count)]
    scripts = Scripts(seed, sizes.scripts)
    builds: list[Path] = []
    steps: list[Step] = []
    lib_names = {stem: _lib_name(stem, b.data) for stem, b in libs.items()}

    for index, name in enumerate(BUILD_NAMES):
        if log:
            print(f"[gen] build {name}", file=sys.stderr, flush=True)
        root = out / name
        previous = builds[-1] if builds else None
        w = _Writer(root, previous, index)
        step = Step()
        rng = _rng(seed, "step", index)
        changed_entries: dict[str, set[str]] = {}
        if index:
            exe, step.exe_edits, step.exe_refs_changed = recompile(exe, rng, rng.randint(4, 8))
            for stem in sorted(rng.sample(sorted(libs), max(1, len(libs) - 1))):
                libs[stem], _, refs = recompile(libs[stem], rng, rng.randint(1, 3))
                step.lib_refs_changed += refs
                new_name = _lib_name(stem, libs[stem].data)
                step.renamed_libs.append((lib_names[stem], new_name))
                lib_names[stem] = new_name
            for pak in paks:
                before = len(step.pak_changed), len(step.pak_inserted)
                pak.evolve(rng, step)
                changed_entries[pak.name] = {
                    s.split("/", 1)[1]
                    for s in step.pak_changed[before[0] :] + step.pak_inserted[before[1] :]
                }
            scripts.evolve(rng, step)
            steps.append(step)

        w.write(EXE_PATH, exe.data, 0o755)
        renamed = {new for _, new in step.renamed_libs}
        for stem, lib in libs.items():
            rel = f"{LIB_DIR}/{lib_names[stem]}"
            if previous is None or lib_names[stem] in renamed:
                w.write(rel, lib.data, 0o755)
            else:
                w.keep(rel)
        for pak in paks:
            rel = f"{PAK_DIR}/{pak.name}"
            pak.write(w.path(rel), changed_entries.get(pak.name, set()))
            w.stamp(rel)
        for rel, text in scripts.files.items():
            if rel in scripts.changed:
                w.write(rel, text.encode())
            else:
                w.keep(rel)
        archive = w.path(ARCHIVE_PATH)
        if previous is None:
            write_archive(archive, sizes.archive_bytes, seed)
        else:
            evolve_archive(previous / ARCHIVE_PATH, archive, rng, seed, step)
        w.stamp(ARCHIVE_PATH)
        info = {"build": index + 1, "name": name, "seed": seed}
        w.write(VERSION_PATH, json.dumps(info, sort_keys=True).encode() + b"\n")
        w.finish()
        builds.append(root)
    return Series(out, builds, steps, sources, sizes)


# -- entry point ---------------------------------------------------------------------------


def _summary(series: Series) -> str:
    lines = []
    for i in range(len(series.builds)):
        files = series.files(i)
        lines.append(f"{BUILD_NAMES[i]}: {len(files)} files, {sum(files.values()) / MB:,.1f} MB")
        if i:
            s = series.steps[i - 1]
            lines.append(
                f"  exe refs re-linked {s.exe_refs_changed}, libs renamed"
                f" {len(s.renamed_libs)}, pak entries +{len(s.pak_inserted)}"
                f" ~{len(s.pak_changed)} -{len(s.pak_removed)}, scripts"
                f" ~{len(s.scripts_edited)} +{len(s.scripts_added)} -{len(s.scripts_removed)},"
                f" archive regions {len(s.archive_regions)}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("out", type=Path, help="directory to create the builds in")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="small sizes (a few MB)")
    p.add_argument("--archive-mb", type=int, help="size of the big archive (MB, 10^6 bytes)")
    p.add_argument("--pak-mb", type=int, help="size of each pak (MB)")
    args = p.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.archive_mb is not None:
        sizes = replace(sizes, archive_bytes=args.archive_mb * MB)
    if args.pak_mb is not None:
        sizes = replace(sizes, pak_bytes=args.pak_mb * MB)
    if args.out.exists() and any(args.out.iterdir()):
        p.error(f"{args.out} is not empty")
    try:
        series = generate(args.out, sizes, args.seed, log=True)
    except BaseException:
        shutil.rmtree(args.out, ignore_errors=True)
        raise
    print(_summary(series))
    return 0


if __name__ == "__main__":
    sys.exit(main())
