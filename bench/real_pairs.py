"""Delta delivery on real consecutive releases of native software: bytes only.

``bench/delta.py`` measures generated builds, whose libraries are at most a few MB; real
ones are recompiled shared libraries of 1-20 MB, where the choice of diff method decides
the bytes (issue 20). This bench downloads public packages of two consecutive releases
(Python wheels from PyPI, Debian packages), unpacks each into a tree, and reports, for a
client holding the old tree and reaching the new one:

* **this launcher:** the two trees published into a ``LocalStore`` as two versions,
  patches built by ``content.publish.build_patches`` (methods chosen by
  ``content.patch_choice``), and the bytes that the launcher's own planner
  (``content.plan.upgrade_download_bytes``) fetches: blobs and patches;
* **per-file HDiffPatch:** each new content the old tree lacks, from its base
  (``content.bases``: same path, else the renamed file), the smaller of HDiffPatch's
  diff (zstd -19 inside) and the zstd -19 blob;
* **per-file zstd -19 --patch-from:** the same with zstd's patch-from (long mode);
* **whole-tree zstd -19 --long --patch-from:** ``zstd -19 --long=31 --patch-from=old.tar
  new.tar`` of the two trees as tar files (sorted names);
* **rsync -z:** ``rsync -az --no-whole-file`` from an ``rsync --daemon`` on 127.0.0.1 into
  a copy of the old tree (``Total bytes received``).

Packages are cached under ``--cache`` (default ``~/.cache/changeover-bench/real-pairs``,
outside the repository). A pair whose packages cannot be downloaded (offline, a version
gone from the mirror, no ``apt-get``) is skipped with the reason printed. No time is
measured: timings belong to a quiet machine (``bench/delta.py``).

    python bench/real_pairs.py --pair openssl           # one small pair
    python bench/real_pairs.py                          # every pair
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import BENCHMARKS_MD, source_revision, write_section
from delta import rsync_daemon
from per_file import files_of, manifest_of, per_file_bytes, sha

from changeover.content.plan import upgrade_download_bytes
from changeover.content.publish import build_patches
from changeover.content.store import LocalStore


@dataclass(frozen=True)
class Package:
    kind: str  # "wheel" or "deb"
    name: str
    version: str


@dataclass(frozen=True)
class Pair:
    name: str
    old: Package
    new: Package
    note: str


PAIRS = (
    Pair(
        "openssl",
        Package("deb", "libssl3", "3.0.20-1~deb12u2"),
        Package("deb", "libssl3", "3.0.22-1~deb12u2"),
        "Debian 12 libssl3: libcrypto.so.3 (4.7 MB) and libssl.so.3",
    ),
    Pair(
        "libpython",
        Package("deb", "libpython3.11", "3.11.2-6+deb12u8"),
        Package("deb", "libpython3.11", "3.11.2-6+deb12u9"),
        "Debian 12 libpython3.11: libpython3.11.so.1.0 (7.7 MB)",
    ),
    Pair(
        "numpy",
        Package("wheel", "numpy", "2.4.5"),
        Package("wheel", "numpy", "2.4.6"),
        "numpy wheels (CPython 3.11, manylinux x86-64): a 10 MB extension, OpenBLAS, Python",
    ),
    Pair(
        "pyside6",
        Package("wheel", "pyside6-essentials", "6.11.2"),
        Package("wheel", "pyside6-essentials", "6.11.3"),
        "PySide6-Essentials wheels (abi3, manylinux x86-64): Qt 6 libraries of 1-32 MB",
    ),
)

_RECEIVED = re.compile(r"Total bytes received: ([\d,]+)")


class Skip(Exception):
    """A pair that cannot be measured here, with why."""


# -- getting the trees ---------------------------------------------------------------------


def download(pkg: Package, cache: Path) -> Path:
    """The package file, from the cache or downloaded into it.

    Raises:
        Skip: it cannot be downloaded here.
    """
    where = cache / pkg.kind / f"{pkg.name}-{pkg.version}"
    found = sorted(where.glob("*.whl" if pkg.kind == "wheel" else "*.deb"))
    if found:
        return found[0]
    where.mkdir(parents=True, exist_ok=True)
    if pkg.kind == "wheel":
        args = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
        for tag in ("manylinux_2_34", "manylinux_2_28", "manylinux_2_27", "manylinux2014"):
            args += ["--platform", f"{tag}_x86_64"]
        args += ["--python-version", "3.11"]
        args += ["-d", str(where), f"{pkg.name}=={pkg.version}"]
    else:
        if shutil.which("apt-get") is None:
            raise Skip("no apt-get on this machine")
        args = ["apt-get", "download", f"{pkg.name}={pkg.version}"]
    done = subprocess.run(args, cwd=where, capture_output=True, text=True, check=False)
    found = sorted(where.glob("*.whl" if pkg.kind == "wheel" else "*.deb"))
    if done.returncode != 0 or not found:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise Skip(f"cannot download {pkg.name} {pkg.version}: {last[0]}")
    return found[0]


def unpack(package: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    if package.suffix == ".whl":
        with zipfile.ZipFile(package) as z:
            z.extractall(dest)
        return
    if shutil.which("dpkg-deb") is None:
        raise Skip("no dpkg-deb to unpack a Debian package")
    subprocess.run(["dpkg-deb", "-x", str(package), str(dest)], check=True)


# -- the measurements ----------------------------------------------------------------------


def launcher_bytes(old: Path, new: Path, work: Path, workers: int) -> tuple[int, dict[str, int]]:
    """What the launcher fetches, and how many patches of each method were published."""
    store = LocalStore(work / "store")
    manifests = []
    for root in (old, new):
        for p in files_of(root).values():
            store.put_file(p, sha(p))
        m = manifest_of(root)
        store.put_manifest(m)
        manifests.append(m)
    index = build_patches(store, manifests[1], [manifests[0]], workers=workers)
    blobs = {h: store.stored_size(h) for h in manifests[1].blob_hashes()}
    methods: dict[str, int] = {}
    for entries in index.patches.values():
        for e in entries:
            methods[e.method] = methods.get(e.method, 0) + 1
    return upgrade_download_bytes(manifests[0], manifests[1], index, blobs), methods


def whole_tree_bytes(old: Path, new: Path, work: Path) -> int:
    if shutil.which("zstd") is None:
        raise Skip("no zstd command for the whole-tree patch")
    tars = []
    for root, name in ((old, "old.tar"), (new, "new.tar")):
        tar = work / name
        subprocess.run(
            [
                "tar",
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--mtime=@0",
                "-cf",
                str(tar),
                "-C",
                str(root),
                ".",
            ],
            check=True,
        )
        tars.append(tar)
    out = work / "tree.zst"
    subprocess.run(
        [
            "zstd",
            "-q",
            "-f",
            "-19",
            "--long=31",
            f"--patch-from={tars[0]}",
            str(tars[1]),
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,  # its advice on tuning --patch-from for big files
    )
    return out.stat().st_size


def rsync_bytes(old: Path, new: Path, work: Path) -> int:
    if shutil.which("rsync") is None:
        raise Skip("no rsync")
    dest = work / "rsync-client"
    shutil.copytree(old, dest, symlinks=True)
    with rsync_daemon(new, work) as url:
        done = subprocess.run(
            # --checksum: packages unpack with their archive's times, so a changed file
            # of the same size and time (a version string) would be skipped as unchanged.
            [
                "rsync",
                "-az",
                "--checksum",
                "--delete",
                "--no-whole-file",
                "--stats",
                url,
                f"{dest}/",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    m = _RECEIVED.search(done.stdout)
    if m is None:
        raise Skip(f"no 'Total bytes received' in rsync's output:\n{done.stdout}")
    if {k: sha(p) for k, p in files_of(dest).items()} != {
        k: sha(p) for k, p in files_of(new).items()
    }:
        raise AssertionError("rsync's client tree differs from the new tree")
    return int(m.group(1).replace(",", ""))


def measure(pair: Pair, cache: Path, workers: int) -> dict[str, Any]:
    old_pkg, new_pkg = download(pair.old, cache), download(pair.new, cache)
    with tempfile.TemporaryDirectory(prefix="real-pair-") as tmp:
        work = Path(tmp)
        old, new = work / "old", work / "new"
        unpack(old_pkg, old)
        unpack(new_pkg, new)
        launcher, methods = launcher_bytes(old, new, work, workers)
        hdiff_bytes, zstd_bytes = per_file_bytes(old, new)
        return {
            "pair": pair.name,
            "note": pair.note,
            "new_tree": sum(p.stat().st_size for p in files_of(new).values()),
            "launcher": launcher,
            "methods": methods,
            "per_file_hdiffpatch": hdiff_bytes,
            "per_file_zstd19": zstd_bytes,
            "whole_tree_zstd19_long": whole_tree_bytes(old, new, work),
            "rsync_z": rsync_bytes(old, new, work),
        }


def table(rows: Sequence[dict[str, Any]]) -> str:
    cols = (
        "launcher",
        "per_file_hdiffpatch",
        "per_file_zstd19",
        "whole_tree_zstd19_long",
        "rsync_z",
    )
    lines = [
        "| pair | new tree | "
        + " | ".join(cols)
        + " | launcher ÷ best reference | patches by method |",
        "|" + " --- |" * (len(cols) + 4),
    ]
    for r in rows:
        refs = [int(r[c]) for c in cols[1:]]
        ratio = int(r["launcher"]) / max(1, min(refs))
        cells = " | ".join(f"{int(r[c]):,}" for c in cols)
        lines.append(
            f"| {r['pair']} | {int(r['new_tree']):,} | {cells} | {ratio:.3f}x | {r['methods']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--pair", action="append", choices=[x.name for x in PAIRS], help="only these")
    p.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "changeover-bench"
        / "real-pairs",
        help="where downloaded packages are kept (outside the repository)",
    )
    p.add_argument("--workers", type=int, default=2, help="patch-building processes")
    p.add_argument("--out", type=Path, default=BENCHMARKS_MD, help="markdown file to update")
    p.add_argument("--no-write", action="store_true", help="print only; leave --out alone")
    args = p.parse_args(argv)
    rows = []
    for pair in PAIRS:
        if args.pair and pair.name not in args.pair:
            continue
        try:
            rows.append(measure(pair, args.cache, args.workers))
        except Skip as e:
            print(f"skipped {pair.name}: {e}", flush=True)
            continue
        print(f"measured {pair.name}: {rows[-1]}", flush=True)
    if rows:
        print(table(rows))
        if not args.no_write:
            write_section(args.out, SECTION, report(rows, argv))
    return 0


SECTION = "real-pairs"


def report(rows: Sequence[dict[str, Any]], argv: Sequence[str] | None) -> str:
    given = " ".join(argv if argv is not None else sys.argv[1:])
    notes = "\n".join(f"- {r['pair']}: {r['note']}" for r in rows)
    return f"""### Real consecutive releases: bytes (`bench/real_pairs.py`)

`python bench/real_pairs.py {given}` at {source_revision()}. Bytes a client holding the
old tree downloads to reach the new one (no times: those belong to `bench/delta.py` on a
quiet machine). "launcher" is what the launcher's planner fetches over the patches the
publisher built (methods by `content/patch_choice.py`); the references are computed in
the same run on the same trees.

{table(rows)}

{notes}
"""


if __name__ == "__main__":
    sys.exit(main())
