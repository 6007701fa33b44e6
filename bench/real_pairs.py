"""Delta delivery on real consecutive releases of native software: bytes and times.

``bench/delta.py`` measures generated builds, whose libraries are at most a few MB; real
ones are recompiled shared libraries of 1-20 MB, where the choice of diff method decides
the bytes (issue 20). This bench downloads public packages of two consecutive releases
(Python wheels from PyPI, Debian packages), unpacks each into a tree, and reports, for a
client holding the old tree and reaching the new one, bytes downloaded and seconds taken:

* **this launcher:** a real ``changeover server`` publishes the two trees as versions
  (push, diff, accept: patches built with methods chosen by ``content.patch_choice``;
  publish wall and CPU seconds), and the packaged ``changeover-launcher`` (built at the
  start, ``common.player_launcher``) installs the old one, then updates to the new one
  (``downloaded_bytes``; wall clock with start-up; peak memory);
* **per-file HDiffPatch:** each new content the old tree lacks, from its base
  (``content.bases``: same path, else the renamed file), the smaller of HDiffPatch's
  diff (zstd -19 inside) and the zstd -19 blob; seconds to make and write those files;
* **per-file zstd -19 --patch-from:** the same with zstd's patch-from (long mode);
* **whole-tree zstd -19 --long --patch-from:** ``zstd -19 --long=31 --patch-from=old.tar
  new.tar`` of the two trees as tar files (sorted names); seconds to apply and untar;
* **rsync -z:** ``rsync -az --no-whole-file`` from an ``rsync --daemon`` on 127.0.0.1 into
  a copy of the old tree (``Total bytes received``);
* **full download:** ``tar | zstd -19 --long=27`` of the new tree, and the seconds to
  decompress and untar it: the apply-time target's "plain decompress-and-write".

Packages are cached under ``--cache`` (default ``~/.cache/changeover-bench/real-pairs``,
outside the repository). A pair whose packages cannot be downloaded (offline, a version
gone from the mirror, no ``apt-get``) is skipped with the reason printed. Times are of
one run each: run it alone on the machine.

    python bench/real_pairs.py --pair openssl           # one small pair
    python bench/real_pairs.py                          # every pair
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    BENCHMARKS_MD,
    BenchError,
    PlayerLauncher,
    Server,
    apply_seconds,
    compile_bytecode,
    cpu_seconds,
    has_gnu_time,
    log,
    machine_info,
    median,
    player_launcher,
    run_cli,
    run_timed,
    running_server,
    source_revision,
    write_section,
)
from delta import COMPLETED, TAR, ZSTD_FULL, ZSTD_PATCH, rm, rsync_daemon, shell, tree_hashes
from per_file import files_of, per_file

from changeover.content.delivery import DeliveryIndex


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

IMAGE = "real-pair"


@dataclass
class Timing:
    """One client's update: bytes downloaded and seconds taken (wall clock)."""

    bytes: int
    seconds: float


def launcher_update(
    old: Path, new: Path, work: Path, launcher: PlayerLauncher, repeat: int = 1
) -> tuple[Timing, dict[str, Any]]:
    """A real server publishes the two trees as versions (the new one's patches built by
    ``diff accept``, methods by ``content/patch_choice.py``); ``repeat`` times, the packaged
    launcher installs the old one in a fresh place (its own cache), then the timed update.
    Returns the update (median wall clock) and the details: publish wall and CPU seconds,
    the sync's own seconds and each phase's (medians), its peak memory (the largest),
    patches by method."""
    expected = tree_hashes(new)
    with running_server(work / "server") as srv:
        run_cli("image", "create", IMAGE, env=srv.env)
        published = [publish_tree(srv, root, label) for root, label in ((old, "old"), (new, "new"))]
        content = f"{srv.url}/content"
        runs = []
        for n in range(repeat):
            target = work / f"launcher-client-{n}" / "game"
            target.parent.mkdir()
            sync = [launcher.path, "sync", content, str(target), "--image", IMAGE, "--branch", "b"]
            for version in (published[0][0], published[1][0]):
                run_cli(
                    "branch", "set", "b", "--image", IMAGE, "--version", str(version), env=srv.env
                )
                if version == published[0][0]:
                    run_timed([*sync, "--json"])  # the client on the old tree (untimed)
            subprocess.run(["sync"], check=True)  # nothing left to write back from the install
            out = run_timed([*sync, "--json"], peak=has_gnu_time())
            if tree_hashes(target) != expected:
                raise AssertionError("the launcher's install differs from the new tree")
            runs.append((out, json.loads(out.stdout)))
        methods = patch_methods(srv, runs[0][1]["manifest"])
    downloaded = {int(report["downloaded_bytes"]) for _, report in runs}
    if len(downloaded) != 1:
        raise AssertionError(f"the same update downloaded {sorted(downloaded)} bytes")
    reports = [report for _, report in runs]
    phases = {phase for report in reports for phase in report["timings"]}
    details = {
        "publish_s": published[1][1],
        "publish_cpu_s": published[1][2],
        "own_s": median([float(report["seconds"]) for report in reports]),
        "timings": {p: median([r["timings"].get(p, 0.0) for r in reports]) for p in phases},
        "peak_mib": max(out.peak_rss_kib for out, _ in runs) / 1024,
        "methods": methods,
    }
    return Timing(downloaded.pop(), median([out.seconds for out, _ in runs])), details


def publish_tree(srv: Server, root: Path, label: str) -> tuple[int, float, float]:
    """Push, analyse and accept a tree; its version number, the accept's wall seconds and
    the server's CPU seconds meanwhile (its patch-building workers included)."""
    push = ["push", str(root), "--image", IMAGE, "--label", label, "--wait", "--json"]
    upd = finished(run_cli(*push, env=srv.env).stdout, f"push of {label}")
    diff = ["diff", "create", "--image", IMAGE, "--update", str(upd["id"]), "--wait", "--json"]
    d = finished(run_cli(*diff, env=srv.env).stdout, f"diff of {label}")
    assert srv.pid is not None
    cpu0 = cpu_seconds(srv.pid, children=True)
    out = run_cli("diff", "accept", str(d["id"]), "--wait", "--json", env=srv.env)
    cpu = cpu_seconds(srv.pid, children=True) - cpu0
    return int(finished(out.stdout, f"version of {label}")["number"]), out.seconds, cpu


def finished(out: str, what: str) -> dict[str, Any]:
    job: dict[str, Any] = json.loads(out)
    if job.get("status") != COMPLETED:
        raise BenchError(f"{what} ended {job.get('status_name')}: {job.get('error')}")
    return job


def patch_methods(srv: Server, manifest_id: str) -> dict[str, int]:
    """How many patches of each method the server published for ``manifest_id`` (its
    delivery index, read where the server keeps it)."""
    path = srv.data_dir / "store" / "private" / "delivery" / f"{manifest_id}.json"
    index = DeliveryIndex.from_bytes(path.read_bytes())
    methods: dict[str, int] = {}
    for entries in index.patches.patches.values():
        for e in entries:
            methods[e.method] = methods.get(e.method, 0) + 1
    return methods


def tar_tree(root: Path, tar: Path) -> None:
    subprocess.run([*TAR, "-cf", str(tar), "-C", str(root), "."], check=True)


def whole_tree(old: Path, new: Path, work: Path, repeat: int = 1) -> tuple[Timing, Timing, float]:
    """The whole-tree patch (``zstd -19 --long=31 --patch-from``) and the full download
    (``tar | zstd -19 --long=27``): their bytes and the time to apply each into an empty
    directory (``zstd -d | tar -x``; the full one is the apply-time target's reference);
    and the seconds a ``sync -f`` of the file system took after the full one's (what
    making it durable adds, as the launcher does before it switches). Medians of
    ``repeat`` applies."""
    tars = {"old": work / "old.tar", "new": work / "new.tar"}
    tar_tree(old, tars["old"])
    tar_tree(new, tars["new"])
    patch, full = work / "tree.zst", work / "new.tar.zst"
    base = f"--patch-from={tars['old']}"
    # Their advice on tuning --patch-from for big files goes to stderr: captured.
    run_timed([*ZSTD_PATCH, "-q", "-f", "-T0", base, str(tars["new"]), "-o", str(patch)])
    run_timed([*ZSTD_FULL, "-q", "-f", "-T0", str(tars["new"]), "-o", str(full)])
    expected = tree_hashes(new)

    def apply(name: str, script: str) -> tuple[float, float]:
        times, syncs = [], []
        for _ in range(repeat):
            dest = work / name
            dest.mkdir()
            subprocess.run(["sync"], check=True)
            out = run_timed(shell(script.format(dest=shlex.quote(str(dest)))))
            durable = run_timed(["sync", "-f", str(dest)])
            if tree_hashes(dest) != expected:
                raise AssertionError(f"the {name} tree differs from the new tree")
            rm(dest)
            times.append(out.seconds)
            syncs.append(durable.seconds)
        return median(times), median(syncs)

    q = {k: shlex.quote(str(v)) for k, v in {**tars, "patch": patch, "full": full}.items()}
    patch_s, _ = apply(
        "whole-tree",
        f"zstd -dc -q --long=31 --patch-from={q['old']} {q['patch']} | tar -xf - -C {{dest}}",
    )
    full_s, sync_s = apply("full", f"zstd -dc -q --long=27 {q['full']} | tar -xf - -C {{dest}}")
    return Timing(patch.stat().st_size, patch_s), Timing(full.stat().st_size, full_s), sync_s


def rsync_update(old: Path, new: Path, work: Path) -> Timing:
    if shutil.which("rsync") is None:
        raise Skip("no rsync")
    dest = work / "rsync-client"
    shutil.copytree(old, dest, symlinks=True)
    subprocess.run(["sync"], check=True)
    with rsync_daemon(new, work) as url:
        # --checksum: packages unpack with their archive's times, so a changed file of the
        # same size and time (a version string) would be skipped as unchanged.
        argv = ["rsync", "-az", "--checksum", "--delete", "--no-whole-file", "--stats"]
        done = run_timed([*argv, url, f"{dest}/"])
    m = _RECEIVED.search(done.stdout)
    if m is None:
        raise Skip(f"no 'Total bytes received' in rsync's output:\n{done.stdout}")
    if tree_hashes(dest) != tree_hashes(new):
        raise AssertionError("rsync's client tree differs from the new tree")
    return Timing(int(m.group(1).replace(",", "")), done.seconds)


def measure(
    pair: Pair, cache: Path, launcher: Callable[[], PlayerLauncher], repeat: int = 1
) -> dict[str, Any]:
    """Every client on one pair; ``launcher`` gives the launcher to time (packaged once,
    when the first pair's packages are here)."""
    old_pkg, new_pkg = download(pair.old, cache), download(pair.new, cache)
    with tempfile.TemporaryDirectory(prefix="real-pair-") as tmp:
        work = Path(tmp)
        old, new = work / "old", work / "new"
        unpack(old_pkg, old)
        unpack(new_pkg, new)
        measured = measure_trees(old, new, work, launcher(), repeat)
        return {"pair": pair.name, "note": pair.note, **measured}


def measure_trees(
    old: Path, new: Path, work: Path, launcher: PlayerLauncher, repeat: int = 1
) -> dict[str, Any]:
    """Every client from the tree ``old`` to the tree ``new``, in ``work``; the launcher's
    update and the full download's apply ``repeat`` times (medians)."""
    log("[real-pairs] the launcher")
    ours, details = launcher_update(old, new, work, launcher, repeat)
    log("[real-pairs] per-file references")
    refs = per_file(old, new, work / "per-file")
    log("[real-pairs] whole-tree references")
    patch, full, full_sync_s = whole_tree(old, new, work, repeat)
    log("[real-pairs] rsync")
    rsync = rsync_update(old, new, work)
    files = files_of(new).values()
    return {
        "new_tree": sum(p.stat().st_size for p in files),
        "new_files": len(files),
        "launcher": ours,
        **details,
        "per_file_hdiffpatch": Timing(refs.hdiff_bytes, refs.hdiff_apply_s),
        "per_file_zstd19": Timing(refs.zstd_bytes, refs.zstd_apply_s),
        "whole_tree_zstd19_long": patch,
        "rsync_z": rsync,
        "full_zstd19": full,
        "full_sync_s": full_sync_s,
    }


REFERENCES = ("per_file_hdiffpatch", "per_file_zstd19", "whole_tree_zstd19_long", "rsync_z")
TARGET_APPLY_RATIO = 2.0
TARGET_PUBLISH_S = 60.0


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Bytes and seconds of each client, per pair."""
    cols = ("launcher", *REFERENCES, "full_zstd19")
    lines = [
        "| pair | new tree | " + " | ".join(cols) + " | launcher ÷ best reference |",
        "|" + " --- |" * (len(cols) + 3),
    ]
    for r in rows:
        ratio = r["launcher"].bytes / max(1, min(r[c].bytes for c in REFERENCES))
        cells = " | ".join(f"{r[c].bytes:,} B, {r[c].seconds:.2f} s" for c in cols)
        tree = f"{r['new_tree']:,} B in {r['new_files']:,} files"
        lines.append(f"| {r['pair']} | {tree} | {cells} | {ratio:.3f}x |")
    return "\n".join(lines)


def launcher_apply_s(row: dict[str, Any]) -> float:
    return apply_seconds(row["timings"])


def decompress_and_write_s(row: dict[str, Any]) -> float:
    """The reference: ``zstd -d | tar -x`` of the full download, then ``sync -f``."""
    return float(row["full_zstd19"].seconds + row["full_sync_s"])


def launcher_table(rows: Sequence[dict[str, Any]]) -> str:
    """The launcher's side: publish, apply time against decompress-and-write, memory."""
    lines = [
        "| pair | publish (diff accept) s | publish CPU s | update s (wall) | sync's own s"
        " | resolve / plan / fetch / apply / commit / install s | decompress-and-write s"
        " (+ sync) | apply ÷ decompress-and-write | update ÷ decompress-and-write"
        " | peak memory MiB | patches by method |",
        "|" + " --- |" * 11,
    ]
    for r in rows:
        t = r["timings"]
        phases = " / ".join(
            f"{t.get(p, 0.0):.2f}"
            for p in ("resolve", "plan", "fetch_wall", "apply_wall", "commit", "install")
        )
        reference = decompress_and_write_s(r)
        lines.append(
            f"| {r['pair']} | {r['publish_s']:.1f} | {r['publish_cpu_s']:.1f}"
            f" | {r['launcher'].seconds:.2f} | {r['own_s']:.2f} | {phases}"
            f" | {r['full_zstd19'].seconds:.2f} + {r['full_sync_s']:.2f}"
            f" | {launcher_apply_s(r) / reference:.2f}x"
            f" | {r['launcher'].seconds / reference:.2f}x"
            f" | {r['peak_mib']:.0f} | {r['methods']} |"
        )
    return "\n".join(lines)


def targets(rows: Sequence[dict[str, Any]]) -> list[str]:
    def mark(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    ratios = {r["pair"]: r["launcher"].bytes / min(r[c].bytes for c in REFERENCES) for r in rows}
    apply = {r["pair"]: launcher_apply_s(r) / decompress_and_write_s(r) for r in rows}
    update = {r["pair"]: r["launcher"].seconds / decompress_and_write_s(r) for r in rows}
    publish = {r["pair"]: r["publish_s"] for r in rows}

    def listed(d: dict[str, float], fmt: str) -> str:
        return ", ".join(f"{k}: {fmt.format(v)}" for k, v in d.items())

    return [
        f"- Bytes at most 1.0x the smallest reference: {mark(max(ratios.values()) <= 1.0)}"
        f" ({listed(ratios, '{:.3f}x')}).",
        f"- Apply within {TARGET_APPLY_RATIO:.0f}x of decompress-and-write of the full"
        " download (the launcher's apply, commit and install against `zstd -d | tar -x`"
        f" and `sync -f`): {mark(max(apply.values()) <= TARGET_APPLY_RATIO)}"
        f" ({listed(apply, '{:.2f}x')}).",
        f"- The whole update (wall clock: start-up, signed metadata, downloads from the"
        f" loopback server and apply) within {TARGET_APPLY_RATIO:.0f}x of the same:"
        f" {mark(max(update.values()) <= TARGET_APPLY_RATIO)} ({listed(update, '{:.2f}x')}).",
        f"- Publish under {TARGET_PUBLISH_S:.0f} s:"
        f" {mark(max(publish.values()) < TARGET_PUBLISH_S)} ({listed(publish, '{:.1f} s')}).",
    ]


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
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="times the launcher's update and the full download's apply run (medians)",
    )
    p.add_argument("--out", type=Path, default=BENCHMARKS_MD, help="markdown file to update")
    p.add_argument("--no-write", action="store_true", help="print only; leave --out alone")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    rows = []
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="real-pairs-launcher-") as tmp:

        @functools.cache
        def launcher() -> PlayerLauncher:
            missing = [t for t in ("zstd", "tar", "rsync") if shutil.which(t) is None]
            if not has_gnu_time():
                missing.append("GNU time")
            if missing:
                raise BenchError(f"missing {', '.join(missing)}: `make bench` installs them")
            compile_bytecode()
            log("[real-pairs] packaging the launcher")
            return player_launcher(Path(tmp))

        for pair in PAIRS:
            if args.pair and pair.name not in args.pair:
                continue
            try:
                rows.append(measure(pair, args.cache, launcher, args.repeat))
            except Skip as e:
                print(f"skipped {pair.name}: {e}", flush=True)
                continue
            load.append(os.getloadavg()[0])
            log(f"[real-pairs] measured {pair.name}: {rows[-1]}")
    if rows:
        body = report(rows, argv, launcher(), load, args.repeat)
        print(body)
        if not args.no_write:
            write_section(args.out, SECTION, body)
    return 0


SECTION = "real-pairs"


def report(
    rows: Sequence[dict[str, Any]],
    argv: Sequence[str] | None,
    launcher: PlayerLauncher,
    load: Sequence[float],
    repeat: int = 1,
) -> str:
    given = " ".join(argv if argv is not None else sys.argv[1:])
    notes = "\n".join(f"- {r['pair']}: {r['note']}" for r in rows)
    info = machine_info()
    loads = ", ".join(f"{x:.1f}" for x in load)
    return f"""### Real consecutive releases (`bench/real_pairs.py`)

- **Command:** `python bench/real_pairs.py {given}`; source {source_revision()}; {info["date"]}.
- **Machine:** {info["cpus"]} CPUs ({info["cpu"]}), {info["memory"]} RAM, {info["os"]}, \
Python {info["python"]}; load average (1 min) at the start and after each pair: {loads}.
- **Method:** each pair once (bytes do not vary); the launcher's update and the full \
download's apply {repeat} times, medians (the launcher's peak: the largest); the other \
references' times are single runs. A client \
holds the old tree and reaches the new one. **launcher:** a real `changeover server` \
publishes both trees as versions (the new one's patches built by `diff accept`, methods \
by `content/patch_choice.py`) and {launcher.what} installs the old version, then updates \
(`downloaded_bytes`, wall clock with start-up, peak resident set by GNU time, and the \
seconds by phase its report gives: `fetch` and `apply` here are the wall clock during \
which at least one of its workers was in that phase (four downloading, at most one per \
CPU applying, side by side: both inside `obtain`). \
**per-file:** each changed file as the smaller of its patch (HDiffPatch's diff with zstd \
-19 inside, or `zstd -19 --patch-from`) and its zstd -19 blob, from the base the \
publisher would use; seconds: making the changed files from those and writing them \
(fsync), summed, in process. **whole tree:** `zstd -19 --long=31 --patch-from=old.tar` \
of `new.tar`; seconds: `zstd -d | tar -x` into an empty directory (needs `old.tar`, which \
a client would not have). **rsync:** `rsync -az --checksum --no-whole-file` from a daemon \
on loopback into a copy of the old tree. **full:** `tar | zstd -19 --long=27` of the new \
tree; seconds: `zstd -d | tar -x` into an empty directory, then `sync -f` of its file \
system, the "plain decompress-and-write" of the apply-time target (the launcher makes its \
objects durable before it switches: a write left in the page cache is not an install). \
The target's "apply" is the launcher's `apply_wall` + `commit` + `install`: making the \
new files from what was downloaded, durably, and switching to them. Every client's tree \
is checked against the new one.

{table(rows)}

{launcher_table(rows)}

Targets:

{chr(10).join(targets(rows))}

{notes}
"""


if __name__ == "__main__":
    sys.exit(main())
