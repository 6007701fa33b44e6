"""A control plane with three published versions of one image, for the launcher tests."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests_helpers import Server, release, start_server, stop_server


def make_versions(seed: int = 3) -> list[dict[str, bytes]]:
    """Three game-like builds: v2 changes, adds and removes files; v3 changes more."""
    rng = random.Random(seed)
    v1 = {f"data/asset{i:02d}.bin": rng.randbytes(rng.randint(1, 120_000)) for i in range(24)}
    v1["bin/game"] = rng.randbytes(600_000)
    v1["empty.txt"] = b""
    v1["scripts/main.lua"] = b"print('hello')\n" * 200
    v2 = dict(v1)
    for i in range(0, 24, 5):
        v2[f"data/asset{i:02d}.bin"] = rng.randbytes(80_000)
    v2["bin/game"] = v1["bin/game"][:300_000] + rng.randbytes(2_000) + v1["bin/game"][300_000:]
    del v2["data/asset01.bin"], v2["data/asset02.bin"]
    v2["data/new.bin"] = rng.randbytes(50_000)
    v3 = dict(v2)
    for i in range(3, 24, 4):
        v3[f"data/asset{i:02d}.bin"] = rng.randbytes(90_000)
    return [v1, v2, v3]


def elf_library(seed: int, size: int) -> tuple[bytes, bytes]:
    """Two builds of an ELF-like library: the second has code inserted and every 'address'
    after it moved, as a relink does (what zstd codes poorly and HDiffPatch well)."""
    rng = random.Random(seed)
    ops = [rng.randbytes(rng.randint(1, 3)) for _ in range(60)]
    code = b"".join(
        rng.choice(ops) + rng.randrange(1 << 16).to_bytes(4, "little") for _ in range(size // 6)
    )
    old = b"\x7fELF\x02\x01\x01\x00" + code
    new = bytearray(old[:9000] + rng.randbytes(500) + old[9000:])
    for pos in range(9500, len(new) - 4, 83):
        value = int.from_bytes(new[pos : pos + 4], "little") + 96
        new[pos : pos + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
    return old, bytes(new)


def expected(files: dict[str, bytes]) -> dict[str, str]:
    return {p: hashlib.sha256(b).hexdigest() for p, b in files.items()}


def on_disk(root: Path) -> dict[str, str]:
    """Path → sha256 of every file under an install, following its top-level link."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


@dataclass
class Published:
    server: Server
    versions: list[dict[str, bytes]]
    records: list[dict[str, Any]]

    @property
    def content_url(self) -> str:
        return self.server.url + "/content"

    def point(self, branch: str, number: int) -> None:
        r = self.server.client().put(
            f"/images/game/branches/{branch}", json={"version": str(number)}
        )
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    srv = start_server(tmp_path_factory.mktemp("launcher-server"), None)
    try:
        c = srv.client()
        c.post("/images", json={"name": "game"})
        versions = make_versions()
        records = [release(c, "game", files, f"v{i + 1}") for i, files in enumerate(versions)]
        yield Published(srv, versions, records)
    finally:
        stop_server(srv)
