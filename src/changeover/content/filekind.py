"""What a file is, from its first bytes: enough to choose how to patch it.

Executables and shared libraries (ELF, PE, Mach-O) are where an executable-aware diff pays;
archives, compressed data and media are entropy-coded, where only long identical runs can be
reused and a strong compression level buys nothing. Names are not trusted: game builds ship
``.so`` files without the suffix, ``.dat`` files that are ZIPs and ``.pak`` files of
anything.
"""

from __future__ import annotations

from enum import StrEnum

SNIFF_BYTES = 512
"""How many leading bytes :func:`sniff` looks at (tar's magic is at offset 257)."""


class FileKind(StrEnum):
    ELF = "elf"
    PE = "pe"
    MACHO = "macho"
    ARCHIVE = "archive"
    """A container of files (ZIP, 7z, RAR, tar, ar, Godot .pck, Unity bundles)."""
    COMPRESSED = "compressed"
    """One compressed stream (gzip, zstd, xz, bzip2, LZ4)."""
    MEDIA = "media"
    """Images, audio, video and GPU textures: coded already."""
    OTHER = "other"

    @property
    def executable(self) -> bool:
        return self in _EXECUTABLE

    @property
    def entropy_coded(self) -> bool:
        return self in (FileKind.COMPRESSED, FileKind.MEDIA)


_EXECUTABLE = frozenset({FileKind.ELF, FileKind.PE, FileKind.MACHO})

_PREFIXES: tuple[tuple[bytes, FileKind], ...] = (
    (b"\x7fELF", FileKind.ELF),
    (b"\xfe\xed\xfa\xce", FileKind.MACHO),
    (b"\xfe\xed\xfa\xcf", FileKind.MACHO),
    (b"\xce\xfa\xed\xfe", FileKind.MACHO),
    (b"\xcf\xfa\xed\xfe", FileKind.MACHO),
    (b"PK\x03\x04", FileKind.ARCHIVE),
    (b"PK\x05\x06", FileKind.ARCHIVE),
    (b"7z\xbc\xaf\x27\x1c", FileKind.ARCHIVE),
    (b"Rar!\x1a\x07", FileKind.ARCHIVE),
    (b"!<arch>\n", FileKind.ARCHIVE),
    (b"GDPC", FileKind.ARCHIVE),
    (b"UnityFS\x00", FileKind.ARCHIVE),
    (b"\x1f\x8b", FileKind.COMPRESSED),
    (b"\x28\xb5\x2f\xfd", FileKind.COMPRESSED),
    (b"\xfd7zXZ\x00", FileKind.COMPRESSED),
    (b"BZh", FileKind.COMPRESSED),
    (b"\x04\x22\x4d\x18", FileKind.COMPRESSED),
    (b"\x89PNG\r\n\x1a\n", FileKind.MEDIA),
    (b"\xff\xd8\xff", FileKind.MEDIA),
    (b"GIF87a", FileKind.MEDIA),
    (b"GIF89a", FileKind.MEDIA),
    (b"RIFF", FileKind.MEDIA),
    (b"OggS", FileKind.MEDIA),
    (b"fLaC", FileKind.MEDIA),
    (b"ID3", FileKind.MEDIA),
    (b"\x1a\x45\xdf\xa3", FileKind.MEDIA),
    (b"DDS ", FileKind.MEDIA),
    (b"\xabKTX", FileKind.MEDIA),
    (b"BIK", FileKind.MEDIA),
    (b"KB2", FileKind.MEDIA),
)


def sniff(head: bytes) -> FileKind:
    """The kind of a file whose first bytes are ``head`` (up to ``SNIFF_BYTES`` of them)."""
    if head.startswith(b"MZ"):
        return FileKind.PE  # DOS stub of every Windows .exe and .dll
    if head.startswith(b"\xca\xfe\xba\xbe"):
        # A universal Mach-O counts its architectures here; a Java class file has its
        # version (45 and up) in the same place.
        return FileKind.MACHO if int.from_bytes(head[4:8], "big") < 45 else FileKind.OTHER
    for prefix, kind in _PREFIXES:
        if head.startswith(prefix):
            return kind
    if head[4:8] == b"ftyp":
        return FileKind.MEDIA  # MP4, MOV, HEIF, AVIF
    if head[257:262] == b"ustar":
        return FileKind.ARCHIVE
    return FileKind.OTHER
