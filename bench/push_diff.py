"""Push and diff throughput, against ``sha256sum`` over the same files in the same run.

Generates a game-like build v1 (one large pak, medium incompressible assets, many small
text files) and v2 (about 5 % of its files changed, added or removed), then, per
repetition and against a fresh server data directory so that pushes really upload:

* ``sha256sum`` over every file of v1 (the reference; the page cache is warm);
* ``changeover push --wait`` of v1 to the empty server;
* the same push again: only hashing and asking the server, nothing is uploaded;
* ``push --wait`` of v2 once v1 is the accepted version (only new content is sent);
* ``diff create --wait`` of v2 against v1;
* one trivial CLI call, the fixed cost every command above pays.

Run ``python bench/push_diff.py --help``; ``make bench`` runs it with its defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BENCHMARKS_MD,
    MB,
    BenchError,
    Server,
    clean_up_on_signals,
    load_average,
    load_note,
    log,
    machine_info,
    markdown_table,
    mb_per_s,
    median,
    run_cli,
    run_timed,
    running_server,
    source_revision,
    write_section,
)

SECTION = "push-diff"
# 512 MB keeps `make bench` (5 runs) near 3 minutes on a 2-core machine, where one 1 GB
# push takes ~45 s; pass --size-mb 1024 for a bigger build with the same mix.
DEFAULT_SIZE_MB = 512
DEFAULT_REPEAT = 5
QUICK_ARGS = ["--size-mb", "8", "--repeat", "1"]
"""What ``bench/run.py --quick`` passes: enough to exercise every step in seconds."""

IMAGE = "bench-game"
COMPLETED = 5  # JobState.COMPLETED; the CLI's JSON carries the number
WRITE_CHUNK = 1 << 20


# -- generating builds ---------------------------------------------------------------------


@dataclass
class Build:
    """A build on disk and what the benchmark knows about it: path -> (size, sha256)."""

    root: Path
    files: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(size for size, _ in self.files.values())

    def sizes_by_hash(self) -> dict[str, int]:
        return {sha: size for size, sha in self.files.values()}


@dataclass(frozen=True)
class Layout:
    """How v1 was made and how v2 differs, for the report."""

    pak_bytes: int
    medium_files: int
    medium_bytes: int
    small_files: int
    small_bytes: int
    changed: int
    added: int
    removed: int


def _write_random(path: Path, size: int, rng: random.Random) -> None:
    # Seeded pseudo-random bytes: incompressible like packed, encoded game assets, and
    # the same build on every run.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, WRITE_CHUNK)
            f.write(rng.randbytes(n))
            left -= n


WORDS = (
    "actor",
    "asset",
    "bone",
    "camera",
    "damage",
    "enemy",
    "entity",
    "float",
    "frame",
    "health",
    "item",
    "level",
    "light",
    "material",
    "mesh",
    "npc",
    "player",
    "quest",
    "radius",
    "scale",
    "script",
    "shader",
    "skill",
    "sound",
    "spawn",
    "speed",
    "texture",
    "trigger",
    "weapon",
    "true",
    "false",
    "nil",
    "return",
    "local",
    "function",
    "end",
    "if",
    "then",
    "else",
)


def _text_corpus(rng: random.Random, size: int) -> str:
    """Config/script-like text, as compressible as the real thing (zstd ratio ~3-4)."""
    lines: list[str] = []
    total = 0
    while total < size:
        key = "_".join(rng.choices(WORDS, k=2))
        value = " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))
        line = f"{key}_{rng.randint(0, 999)} = {value} {rng.random():.4f}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines)


def _write_text(path: Path, size: int, corpus: str, rng: random.Random, tag: str) -> None:
    # A unique first line keeps every small file distinct, so none is deduplicated.
    path.parent.mkdir(parents=True, exist_ok=True)
    source = corpus * (size // len(corpus) + 1)  # only repeats for files over the corpus
    start = rng.randrange(len(source) - size + 1)
    body = f"-- {tag}\n" + source[start : start + size]
    path.write_bytes(body.encode()[:size])


SMALL_DIRS = ("Config", "Scripts/ai", "Scripts/ui", "Data/Tables", "Data/Quests", "Localization")
MEDIUM_KINDS = (("Content/Movies", "bk2"), ("Content/Audio", "bank"), ("Content/Textures", "ktx2"))


def _small_path(i: int) -> str:
    ext = ("ini", "lua", "json")[i % 3]
    return f"{SMALL_DIRS[i % len(SMALL_DIRS)]}/part{i % 7}/file_{i:05d}.{ext}"


def generate_v1(root: Path, size_bytes: int, seed: int) -> Layout:
    """A v1 build of about ``size_bytes``: 50 % one pak, 40 % medium files, 10 % small."""
    rng = random.Random(seed)
    pak = size_bytes // 2
    _write_random(root / "Content/Paks/pakchunk0-Linux.pak", pak, rng)

    medium_budget, medium_n = size_bytes * 4 // 10, 0
    left = medium_budget
    while left > 0:
        size = min(left, rng.randint(1 * MB, 16 * MB))
        folder, ext = MEDIUM_KINDS[medium_n % len(MEDIUM_KINDS)]
        _write_random(root / f"{folder}/asset_{medium_n:04d}.{ext}", size, rng)
        left -= size
        medium_n += 1

    # Many small files are what makes per-file costs (requests, fsyncs) show; a big build
    # has thousands. Two per MB of build, capped, averaging ~50 KB at the default size.
    small_budget = size_bytes - pak - medium_budget
    small_n = max(16, min(2000, size_bytes // MB * 2))
    corpus = _text_corpus(rng, 1 << 20)
    mean = small_budget // small_n
    small_total = 0
    for i in range(small_n):
        size = max(64, rng.randint(mean // 4, mean * 7 // 4))
        _write_text(root / _small_path(i), size, corpus, rng, f"{_small_path(i)} v1")
        small_total += size
    return Layout(pak, medium_n, medium_budget, small_n, small_total, 0, 0, 0)


def derive_v2(v1: Path, v2: Path, seed: int, v1_layout: Layout) -> Layout:
    """v2 = v1 with ~5 % of its files touched: 3/5 changed, 1/5 removed, 1/5 added.

    The pak is left alone: whole-file deduplication would re-send all of it for any change.
    """
    rng = random.Random(seed + 1)
    paths = sorted(str(p.relative_to(v1)) for p in v1.rglob("*") if p.is_file())
    candidates = [p for p in paths if not p.endswith(".pak")]
    n_touched = max(5, round(len(paths) * 0.05))
    n_removed = n_added = n_touched // 5
    picked = rng.sample(candidates, n_touched - n_added)
    removed, changed = set(picked[:n_removed]), set(picked[n_removed:])
    corpus = _text_corpus(rng, 1 << 20)
    for rel in paths:
        if rel in removed:
            continue
        src, dst = v1 / rel, v2 / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel not in changed:
            os.link(src, dst)  # unchanged: share the inode, it costs no disk and no time
        elif rel.endswith((".ini", ".lua", ".json")):
            _write_text(dst, src.stat().st_size, corpus, rng, f"{rel} v2")
        else:
            _write_random(dst, src.stat().st_size, rng)  # a re-encoded asset
    for i in range(n_added):
        if i % 2:
            size = rng.randint(1 * MB, 4 * MB)
            _write_random(v2 / f"Content/Textures/dlc_{i:03d}.ktx2", size, rng)
        else:
            size = max(64, v1_layout.small_bytes // max(1, v1_layout.small_files))
            _write_text(v2 / f"Data/Quests/new/quest_{i:03d}.json", size, corpus, rng, f"new {i}")
    return Layout(0, 0, 0, 0, 0, len(changed), n_added, len(removed))


def hash_build(root: Path) -> Build:
    """Size and SHA-256 of every file (setup, untimed; it also warms the page cache)."""
    build = Build(root)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(WRITE_CHUNK):
                h.update(chunk)
        build.files[str(path.relative_to(root))] = (path.stat().st_size, h.hexdigest())
    return build


# -- measuring -----------------------------------------------------------------------------


def sha256sum(build: Build) -> float:
    """Seconds for coreutils ``sha256sum`` over every file; checks it agrees with us."""
    names = sorted(build.files)
    out = run_timed(["xargs", "-0", "sha256sum", "--"], cwd=build.root, stdin=_nul(names))
    got = {}
    for line in out.stdout.splitlines():
        digest, name = line.split("  ", 1)  # "<hex>  <name>", text mode
        got[name] = digest
    if got != {n: build.files[n][1] for n in names}:
        raise BenchError("sha256sum disagrees with hashlib on the generated files")
    return out.seconds


def _nul(names: Sequence[str]) -> bytes:
    return b"\0".join(n.encode() for n in names)


def stored_blobs(server: Server) -> dict[str, int]:
    """Blob hash -> bytes on disk (zstd), per the store layout in content/store.py."""
    blobs = server.data_dir / "store" / "content" / "blobs"
    return {p.name: p.stat().st_size for p in blobs.glob("*/*") if not p.name.startswith(".")}


def _job(out: str, what: str) -> dict[str, Any]:
    job: dict[str, Any] = json.loads(out)
    if job.get("status") != COMPLETED:
        raise BenchError(f"{what} ended {job.get('status_name')}: {job.get('error')}")
    return job


@dataclass
class Run:
    """One repetition's timings (seconds) and byte counts."""

    seconds: dict[str, float]
    v1_stored_bytes: int
    noop_files: int
    noop_bytes: int
    v2_files: int
    v2_bytes: int
    v2_stored_bytes: int
    download_bytes: int


def one_run(v1: Build, v2: Build) -> Run:
    t: dict[str, float] = {"sha256sum": sha256sum(v1)}
    with running_server() as srv:
        env = srv.env
        run_cli("image", "create", IMAGE, env=env)
        push = ["push", "--image", IMAGE, "--wait", "--json"]

        out = run_cli(*push, str(v1.root), "--label", "v1", env=env)
        t["push"] = out.seconds
        upd1 = _job(out.stdout, "push of v1")
        after_v1 = stored_blobs(srv)

        out = run_cli(*push, str(v1.root), "--label", "v1", env=env)
        t["noop"] = out.seconds
        _job(out.stdout, "re-push of v1")
        noop_new = stored_blobs(srv).keys() - after_v1.keys()

        diff = ["diff", "create", "--image", IMAGE, "--wait", "--json"]
        out = run_cli(*diff, "--update", str(upd1["id"]), env=env)
        accept = ["diff", "accept", str(_job(out.stdout, "diff of v1")["id"]), "--wait", "--json"]
        _job(run_cli(*accept, env=env).stdout, "version of v1")

        out = run_cli(*push, str(v2.root), "--label", "v2", env=env)
        t["push_v2"] = out.seconds
        upd2 = _job(out.stdout, "push of v2")
        after_v2 = stored_blobs(srv)

        out = run_cli(*diff, "--update", str(upd2["id"]), env=env)
        t["diff"] = out.seconds
        report = _job(out.stdout, "diff of v2")["report"]

        t["cli"] = run_cli("image", "list", "--json", env=env).seconds

    # What the server newly holds is what was sent, counted at its raw (file) size.
    new = after_v2.keys() - after_v1.keys()
    raw = {**v1.sizes_by_hash(), **v2.sizes_by_hash()}
    return Run(
        seconds=t,
        v1_stored_bytes=sum(after_v1.values()),
        noop_files=len(noop_new),
        noop_bytes=sum(raw[h] for h in noop_new),
        v2_files=len(new),
        v2_bytes=sum(raw[h] for h in new),
        v2_stored_bytes=sum(after_v2[h] for h in new),
        download_bytes=int(report["download_bytes"]),
    )


# -- reporting -----------------------------------------------------------------------------

ROWS = [
    # key, label, which build's bytes the MB/s is of (None: a fixed cost, no throughput)
    ("sha256sum", "`sha256sum` over v1 (reference)", "v1"),
    ("push", "`push --wait` of v1 to an empty server", "v1"),
    ("noop", "`push --wait` of v1 again (no-op: nothing to upload)", "v1"),
    ("push_v2", "`push --wait` of v2 (only its new content is sent)", "v2"),
    ("diff", "`diff create --wait` of v2 against v1", "v2"),
    ("cli", "CLI start-up + one request (`image list`)", None),
]


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _mb(n: float) -> str:
    return f"{n / MB:,.1f}" if n >= 10 * MB else f"{n / MB:,.2f}"


def timings_table(runs: list[Run], v1: Build, v2: Build) -> str:
    size_of = {"v1": v1.total_bytes, "v2": v2.total_bytes}
    rows: list[list[object]] = []
    for key, label, which in ROWS:
        secs = [r.seconds[key] for r in runs]
        rate = ratio = "—"
        if which is not None:
            nbytes = size_of[which]
            rate = f"{mb_per_s(nbytes, median(secs)):,.0f}"
            # Each run's rate over the sha256sum rate of that same run, then the median:
            # a run on a busier machine slows both sides of its own ratio.
            ratios = [
                mb_per_s(nbytes, r.seconds[key]) / mb_per_s(v1.total_bytes, r.seconds["sha256sum"])
                for r in runs
            ]
            ratio = f"{median(ratios):.2f}"
        spread = f"{min(secs):.2f}-{max(secs):.2f}"
        rows.append([label, f"{median(secs):.2f}", spread, rate, ratio])
    return markdown_table(
        ["measurement", "median s", "min-max s", "MB/s", "x sha256sum"], rows, "lrrrr"
    )


def bytes_table(runs: list[Run], v1: Build, v2: Build) -> str:
    def med(attr: str) -> float:
        return median([float(getattr(r, attr)) for r in runs])

    v1_hashes = v1.sizes_by_hash()
    lacking = {h: s for h, s in v2.sizes_by_hash().items() if h not in v1_hashes}
    rows: list[list[object]] = [
        ["v1 build", len(v1.files), _mb(v1.total_bytes)],
        ["v1 as stored by the server (zstd)", "", _mb(med("v1_stored_bytes"))],
        ["sent by the no-op re-push of v1", f"{med('noop_files'):.0f}", _mb(med("noop_bytes"))],
        ["v2 build", len(v2.files), _mb(v2.total_bytes)],
        ["v2 content that v1 lacks (what must be sent)", len(lacking), _mb(sum(lacking.values()))],
        [
            "sent by the v2 push (blobs new on the server)",
            f"{med('v2_files'):.0f}",
            _mb(med("v2_bytes")),
        ],
        ["stored for them (zstd)", "", _mb(med("v2_stored_bytes"))],
        ["v2 diff report: `download_bytes`", "", _mb(med("download_bytes"))],
    ]
    return markdown_table(["bytes", "files", "MB"], rows, "lrr")


def report(
    runs: list[Run],
    v1: Build,
    v2: Build,
    l1: Layout,
    l2: Layout,
    command: str,
    load: tuple[float, float] = (0.0, 0.0),
) -> str:
    info = machine_info()
    return f"""\
### Push and diff throughput (`bench/push_diff.py`)

- **Command:** {command}; source {source_revision()}; {info["date"]}.
- **Machine:** {info["cpus"]} CPUs ({info["cpu"]}), {info["memory"]} RAM, {info["os"]}, \
Python {info["python"]}. Server, CLI and `sha256sum` share those CPUs. \
{load_note(*load, int(info["cpus"]), "stretches every wall-clock figure")}
- **Builds:** v1 is {_mb(v1.total_bytes)} MB in {len(v1.files)} files: one \
{_mb(l1.pak_bytes)} MB pak, {_n(l1.medium_files, "incompressible asset")} of up to \
16 MB ({_mb(l1.medium_bytes)} MB) and {l1.small_files} small text files \
({_mb(l1.small_bytes)} MB). v2 changes {l2.changed}, adds {l2.added} and removes \
{l2.removed} files; its pak is v1's.
- **Method:** median of {_n(len(runs), "run")}, each against a fresh server data \
directory. MB = 10^6 bytes. MB/s is build bytes over wall-clock time, CLI start-up \
included. x sha256sum is the median over runs of the row's MB/s divided by the MB/s of \
`sha256sum` over v1 in the same run (page cache warm for both).

{timings_table(runs, v1, v2)}

{bytes_table(runs, v1, v2)}
"""


# -- entry point ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--size-mb", type=int, default=DEFAULT_SIZE_MB, help="v1 build size (MB)")
    p.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="repetitions")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated builds")
    p.add_argument("--out", type=Path, default=BENCHMARKS_MD, help="markdown file to update")
    p.add_argument("--no-write", action="store_true", help="print only; leave --out alone")
    args = p.parse_args(argv)
    if args.size_mb < 4 or args.repeat < 1:
        p.error("--size-mb must be at least 4 and --repeat at least 1")
    return args


def main(argv: Sequence[str] | None = None, *, invoked_as: str | None = None) -> int:
    """Run the benchmark; ``invoked_as`` is how the caller was started (for the report)."""
    args = parse_args(argv)
    direct = shlex.join(
        [
            *("python", "bench/push_diff.py", "--size-mb", str(args.size_mb)),
            *("--repeat", str(args.repeat), "--seed", str(args.seed)),
        ]
    )
    command = f"`{invoked_as}`, which runs `{direct}`" if invoked_as else f"`{direct}`"
    work = Path(tempfile.mkdtemp(prefix="co-bench-builds-"))
    try:
        log(f"[push-diff] generating a {args.size_mb} MB build in {work}")
        l1 = generate_v1(work / "v1", args.size_mb * MB, args.seed)
        l2 = derive_v2(work / "v1", work / "v2", args.seed, l1)
        v1, v2 = hash_build(work / "v1"), hash_build(work / "v2")
        sha256sum(v1)  # warm-up, untimed: every file read once more before any timing
        runs: list[Run] = []
        load_before = load_average()
        for i in range(args.repeat):
            runs.append(one_run(v1, v2))
            s = runs[-1].seconds
            log(
                f"[push-diff] run {i + 1}/{args.repeat}: sha256sum {s['sha256sum']:.2f} s,"
                f" push {s['push']:.2f} s, no-op {s['noop']:.2f} s,"
                f" push v2 {s['push_v2']:.2f} s, diff {s['diff']:.2f} s"
            )
        body = report(runs, v1, v2, l1, l2, command, (load_before, load_average()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(body)
    if not args.no_write:
        write_section(args.out, SECTION, body)
        log(f"[push-diff] wrote section {SECTION!r} of {args.out}")
    return 0


if __name__ == "__main__":
    clean_up_on_signals()
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; servers stopped and temporary data deleted")
        sys.exit(130)
