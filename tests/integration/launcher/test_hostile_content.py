"""Content security against a hostile content server (issue 18, class 1), with the real
launcher (``changeover launcher sync`` in a process) against a real HTTP server on
127.0.0.1 that serves validly signed metadata and misbehaves on purpose:

* a signed index whose BLAKE3 matches other bytes than the SHA-256 naming the file, and a
  blob of those bytes: nothing may be stored under the SHA-256, for any install;
* a server that trickles a byte at a time, in the headers or the body, of content or of
  signed metadata: every download has a deadline from its signed size, then a retry or a
  clear error;
* a corrupt patch, of each method, or one of a method the launcher does not know: the
  launcher falls back to the blob, at the blob's size, and stores nothing from the patch.

Every error is checked for what a player reads: the file it is about, that the install
was left as it was, whether to retry, and no library exception names.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import pytest
import zstandard

from changeover.content import patching
from changeover.content.patch_index import PatchEntry, PatchIndex, patch_path
from changeover.content.trust import TrustRepo
from tests_helpers import run_cli

pytestmark = pytest.mark.timeout(240)

RUN_TIMEOUT_S = 150
"""A bound on one launcher run, so that a launcher that hangs fails the test instead of
holding it (the old launcher did, on every trickle below)."""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


@dataclass
class Hostile:
    """A signed content tree and what its server does wrong: ``faults`` maps a path
    prefix under the content URL to a fault (``trickle-body``, ``trickle-headers``,
    ``corrupt``), applied ``times`` times each (then the file is served as it is)."""

    content: Path
    repo: TrustRepo
    faults: dict[str, str] = field(default_factory=dict)
    times: int = 1000
    served: dict[str, int] = field(default_factory=dict)
    swap: dict[str, bytes] = field(default_factory=dict)
    """Path → bytes served instead of the file (a blob of other content)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def fault(self, path: str) -> str | None:
        for prefix, kind in self.faults.items():
            if path.startswith(prefix):
                with self.lock:
                    n = self.served.get(path, 0)
                    self.served[path] = n + 1
                return kind if n < self.times else None
        return None

    def publish(
        self,
        files: dict[str, bytes],
        *,
        blobs: dict[str, bytes] | None = None,
        blake3_of: dict[str, str] | None = None,
        patches: dict[str, tuple[bytes, bytes]] | None = None,
        method: str = "zstd",
        listed_as: str | None = None,
    ) -> str:
        """Sign a version of ``files`` onto branch ``live``. ``blobs`` overrides what a
        content's blob holds, ``blake3_of`` the BLAKE3 the index lists for a content;
        ``patches``: target sha → (base bytes, target bytes) to publish a patch for, made
        by ``method`` and listed in the index as ``listed_as`` (by default, that method)."""
        entries = [
            {"path": p, "size": len(d), "sha256": sha(d), "mode": 0o644}
            for p, d in sorted(files.items())
        ]
        manifest = json.dumps(
            {"format": "changeover.manifest/1", "files": entries},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        mid = sha(manifest)
        sizes = {}
        for data in files.values():
            packed = zstandard.ZstdCompressor().compress((blobs or {}).get(sha(data), data))
            path = self.content / "blobs" / sha(data)[:2] / sha(data)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(packed)
            sizes[sha(data)] = len(packed)
        index: dict[str, tuple[PatchEntry, ...]] = {}
        for target, (old, new) in (patches or {}).items():
            rel = patch_path(sha(old), target)
            (self.content / "old").write_bytes(old)
            (self.content / "new").write_bytes(new)
            size = patching.make(
                method, self.content / "old", self.content / "new", self.content / rel, level=19
            )
            made = (self.content / rel).read_bytes()
            named = listed_as or method
            index[target] = (PatchEntry(sha(old), target, rel, size, sha(made), named),)
        digests = {sha(d): b3(d) for d in files.values()}
        digests.update(blake3_of or {})
        delivery = {
            "format": "changeover.delivery/1",
            "manifest": mid,
            "blobs": sizes,
            "patches": PatchIndex(mid, index).to_dict(),
            "blake3": digests,
        }
        self.repo.publish(
            {
                "branches/game/live.json": json.dumps(
                    {"image": "game", "branch": "live", "version": 1, "manifest": mid}
                ).encode(),
                f"manifests/{mid}.json": manifest,
                f"delivery/{mid}.json": json.dumps(delivery).encode(),
            }
        )
        return mid


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[Hostile, str]]:
    content = tmp_path / "repo" / "content"
    host = Hostile(content, TrustRepo(content, tmp_path / "repo" / "keys"))
    host.repo.ensure_initialised()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            file = content / path.lstrip("/")
            if not file.is_file() or ".." in path:
                self._answer(404, b"not here")
                return
            body = host.swap.get(path, file.read_bytes())
            kind = host.fault(path)
            if kind == "trickle-headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                self._trickle(b"a" * 10_000_000)
            elif kind == "trickle-body":
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self._trickle(body)
            elif kind == "corrupt":
                self._answer(200, bytes([body[0] ^ 0xFF]) + body[1:])
            else:
                self._answer(200, body)

        def _trickle(self, data: bytes) -> None:
            # One byte every 0.1 s: never a gap near the client's timeout, never done.
            for i in range(len(data)):
                if host.stop.is_set():
                    break
                try:
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                except OSError:
                    break  # the client gave up: what the test wants
                host.stop.wait(0.1)
            self.close_connection = True

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield host, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        host.stop.set()
        httpd.shutdown()
        httpd.server_close()


def sync(url: str, target: Path, *extra: str) -> tuple[int, str]:
    r = run_cli(
        "launcher",
        "sync",
        url,
        str(target),
        "--image",
        "game",
        "--branch",
        "live",
        "--json",
        *extra,
        timeout_s=RUN_TIMEOUT_S,
    )
    return r.returncode, r.stdout if r.returncode == 0 else r.stderr


def on_disk(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def held_objects(cache: Path) -> dict[str, bytes]:
    """Object name → bytes, for every object in the launcher's cache."""
    objects = cache / "objects"
    return {
        p.name.rstrip("x"): p.read_bytes()
        for p in objects.glob("??/*")
        if p.is_file() and not p.name.startswith(".")
    }


def assert_player_message(err: str, target: Path, *, file: str, retry: bool) -> None:
    """What a player reads: the file, the install's state, whether to retry, our words."""
    assert file in err, err
    assert f"{target} was left as it was" in err, err
    assert ("retry later" in err) is retry, err
    assert "Error" not in err and "Traceback" not in err, err  # no library class names


# -- an object must match the name it is stored under ----------------------------------------

rng = random.Random(18)
GOOD = rng.randbytes(70_000)
EVIL = rng.randbytes(70_000)  # same size: only a hash tells them apart
OTHER = b"an unrelated file\n" * 100


def test_bytes_matching_only_the_blake3_are_refused_and_never_stored(
    hostile: tuple[Hostile, str], tmp_path: Path
) -> None:
    host, url = hostile
    cache = tmp_path / "cache"
    # A compromised signer: GOOD's SHA-256 beside EVIL's BLAKE3, and EVIL in GOOD's blob.
    host.publish(
        {"data/level1.pak": GOOD, "readme.txt": OTHER},
        blobs={sha(GOOD): EVIL},
        blake3_of={sha(GOOD): b3(EVIL)},
    )
    first, second = tmp_path / "game", tmp_path / "game-beta"
    code, err = sync(url, first, "--cache", str(cache))
    assert code == 7, err
    assert_player_message(err, first, file="data/level1.pak", retry=False)
    assert "contradicts itself" in err
    assert not os.path.lexists(first)
    assert sha(GOOD) not in held_objects(cache)
    # Honest metadata and blob again: the same cache installs GOOD, for every install.
    host.publish({"data/level1.pak": GOOD, "readme.txt": OTHER})
    for target in (first, second):
        code, out = sync(url, target, "--cache", str(cache))
        assert code == 0, out
        assert on_disk(target) == {"data/level1.pak": GOOD, "readme.txt": OTHER}
    assert held_objects(cache)[sha(GOOD)] == GOOD
    verify = run_cli("launcher", "verify", str(first), "--cache", str(cache), "--json")
    assert verify.returncode == 0, verify.stdout


def test_two_signed_digests_that_disagree_name_the_file(
    hostile: tuple[Hostile, str], tmp_path: Path
) -> None:
    host, url = hostile
    # The right blob, but the signed index lists a BLAKE3 of other bytes for it.
    host.publish({"bin/game": GOOD}, blake3_of={sha(GOOD): b3(EVIL)})
    target = tmp_path / "game"
    code, err = sync(url, target)
    assert code == 7, err
    assert_player_message(err, target, file="bin/game", retry=False)
    assert "BLAKE3" in err
    assert not os.path.lexists(target)


def test_a_wrong_blob_is_named_by_its_file(hostile: tuple[Hostile, str], tmp_path: Path) -> None:
    host, url = hostile
    host.publish({"data/level1.pak": GOOD, "readme.txt": OTHER})
    target = tmp_path / "game"
    assert sync(url, target)[0] == 0
    # Version 2 changes level1; the server serves damaged bytes for its blob, always.
    host.publish({"data/level1.pak": EVIL, "readme.txt": OTHER})
    host.faults = {f"/blobs/{sha(EVIL)[:2]}/": "corrupt"}
    code, err = sync(url, target)
    assert code == 7, err
    assert_player_message(err, target, file="data/level1.pak", retry=True)
    assert on_disk(target) == {"data/level1.pak": GOOD, "readme.txt": OTHER}


# -- no download may hang forever ----------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "kind"),
    [
        ("blob", "trickle-body"),
        ("blob", "trickle-headers"),
        ("timestamp", "trickle-body"),
        ("manifest", "trickle-body"),
    ],
)
def test_a_trickling_server_is_given_up_on_with_a_clear_error(
    hostile: tuple[Hostile, str], tmp_path: Path, where: str, kind: str
) -> None:
    host, url = hostile
    target = tmp_path / "game"
    host.publish({"data/level1.pak": GOOD})
    assert sync(url, target)[0] == 0
    host.publish({"data/level1.pak": EVIL})
    prefix = {
        "blob": f"/blobs/{sha(EVIL)[:2]}/",
        "timestamp": "/metadata/timestamp.json",
        "manifest": "/targets/manifests/",
    }[where]
    host.faults = {prefix: kind}
    # --timeout 1: the gap between bytes (0.1 s) never reaches it. --min-rate 1M: each
    # attempt has 1 s plus its signed size at 1 MiB/s.
    code, err = sync(url, target, "--timeout", "1", "--min-rate", "1M")
    assert code == 8, err
    assert "too slow" in err and "--min-rate" in err
    assert "tried 5 times" in err  # retried before giving up
    name = {
        "blob": "data/level1.pak",
        "timestamp": "the signed metadata timestamp.json",
        "manifest": "the file list (manifest) of game/live",
    }
    assert_player_message(err, target, file=name[where], retry=True)
    assert on_disk(target) == {"data/level1.pak": GOOD}


def test_a_download_trickled_once_is_retried_and_completes(
    hostile: tuple[Hostile, str], tmp_path: Path
) -> None:
    host, url = hostile
    target = tmp_path / "game"
    host.publish({"data/level1.pak": GOOD, "readme.txt": OTHER})
    host.faults = {"/blobs/": "trickle-body"}
    host.times = 1
    code, out = sync(url, target, "--timeout", "1", "--min-rate", "1M")
    assert code == 0, out
    assert on_disk(target) == {"data/level1.pak": GOOD, "readme.txt": OTHER}
    assert host.served and all(n >= 2 for n in host.served.values())


# -- falling back from a bad patch to the blob ---------------------------------------------


@pytest.mark.parametrize(
    ("fault", "method"),
    [
        ("corrupt patch", "zstd"),
        ("patch making other bytes", "zstd"),
        # HDiffPatch's header checks are the unit tests'; here, one that passes them all.
        ("patch making other bytes", "hdiffpatch"),
        ("unknown method", "hdiffpatch"),
    ],
)
def test_a_bad_patch_falls_back_to_the_blob(
    hostile: tuple[Hostile, str], tmp_path: Path, fault: str, method: str
) -> None:
    host, url = hostile
    target, cache = tmp_path / "game", tmp_path / "cache"
    host.publish({"data/level1.pak": GOOD})
    assert sync(url, target, "--cache", str(cache))[0] == 0
    new = GOOD[:30_000] + b"patched" + GOOD[30_000:]
    if fault == "corrupt patch":
        host.publish({"data/level1.pak": new}, patches={sha(new): (GOOD, new)}, method=method)
        host.faults = {"/patches/": "corrupt"}
    elif fault == "unknown method":
        # A newer publisher's method, which this launcher must not even download.
        host.publish(
            {"data/level1.pak": new},
            patches={sha(new): (GOOD, new)},
            method=method,
            listed_as="xdelta9",
        )
    else:
        # A publisher's bug: a patch, signed as it is, that makes the wrong file.
        wrong = GOOD[:30_000] + b"PATCHED" + GOOD[30_000:]
        host.publish({"data/level1.pak": new}, patches={sha(new): (GOOD, wrong)}, method=method)
        rel = next((host.content / "patches").rglob("*.zpatch"))
        assert sha(new) in rel.name
    code, out = sync(url, target, "--cache", str(cache))
    assert code == 0, out
    report = json.loads(out)
    assert on_disk(target) == {"data/level1.pak": new}
    # Every object the cache holds is what its name says: nothing of the bad patch stayed.
    assert all(sha(data) == name for name, data in held_objects(cache).items())
    assert not [p for p in (cache / "objects").rglob("*") if p.is_file() and "part" in p.name]
    blob = (host.content / "blobs" / sha(new)[:2] / sha(new)).stat().st_size
    patch = next((host.content / "patches").rglob("*.zpatch")).stat().st_size
    assert patch < blob  # the cap the old launcher wrongly applied to the blob
    fetched_patch = 0 if fault == "unknown method" else patch
    assert report["downloaded_bytes"] == fetched_patch + blob


def wait_until(check: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.05)
    raise AssertionError("condition not met")
