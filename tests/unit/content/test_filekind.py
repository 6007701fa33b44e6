"""Unit tests for ``changeover.content.filekind``: what a file is, from its first bytes."""

from __future__ import annotations

import pytest

from changeover.content.filekind import FileKind, sniff


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x7fELF\x02\x01\x01" + bytes(57), FileKind.ELF),
        (b"MZ\x90\x00" + bytes(60), FileKind.PE),
        (b"\xcf\xfa\xed\xfe\x07\x00\x00\x01", FileKind.MACHO),
        (b"\xfe\xed\xfa\xce", FileKind.MACHO),
        (b"\xca\xfe\xba\xbe\x00\x00\x00\x02", FileKind.MACHO),  # universal, 2 architectures
        (b"\xca\xfe\xba\xbe\x00\x00\x00\x41", FileKind.OTHER),  # a Java class file
        (b"PK\x03\x04\x14\x00", FileKind.ARCHIVE),
        (b"GDPC\x02\x00\x00\x00", FileKind.ARCHIVE),
        (b"UnityFS\x00\x00\x00\x00\x08", FileKind.ARCHIVE),
        (bytes(257) + b"ustar\x0000", FileKind.ARCHIVE),
        (b"\x28\xb5\x2f\xfd\x04\x00", FileKind.COMPRESSED),
        (b"\x1f\x8b\x08\x00", FileKind.COMPRESSED),
        (b"\x89PNG\r\n\x1a\n\x00", FileKind.MEDIA),
        (b"OggS\x00\x02", FileKind.MEDIA),
        (b"\x00\x00\x00\x20ftypisom", FileKind.MEDIA),
        (b"DDS \x7c\x00", FileKind.MEDIA),
        (b"", FileKind.OTHER),
        (b'{"json": true}', FileKind.OTHER),
        (b"\x7fEL", FileKind.OTHER),  # too short to be ELF
    ],
)
def test_sniff(head: bytes, kind: FileKind) -> None:
    assert sniff(head) is kind


def test_kinds_group_into_executable_and_entropy_coded() -> None:
    assert {k for k in FileKind if k.executable} == {FileKind.ELF, FileKind.PE, FileKind.MACHO}
    assert {k for k in FileKind if k.entropy_coded} == {FileKind.COMPRESSED, FileKind.MEDIA}
