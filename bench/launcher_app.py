"""The players' desktop app: package size, cold start, memory, and one update's bytes.

* **Package:** ``packaging/build.py`` (what ``make package`` runs) builds the one-folder
  app, with the desktop app and Qt and ``--without-app``; reported: bytes, files and the
  largest files (where a leaner package would come from).
* **Cold start:** the packaged ``changeover-launcher`` is started ``--repeat`` times
  on Qt's offscreen platform, with an empty environment but for that platform and the
  timings file (``CHANGEOVER_LAUNCHER_TIMINGS``, see ``changeover/launcher/app/timings.py``),
  on an up-to-date install of a real server's branch. Measured from the spawn to the
  window's first paint and to the first paint of "ready to play" (the check of the branch
  against the server included). References in the same run: the same app unpackaged
  (``python -m changeover.launcher.app``), and a PySide6 window that does nothing
  (``python``), the floor of any Qt app here.
* **Memory:** the packaged app's resident set once ready (idle); the peak resident set
  of the app (unpackaged: an update needs the Update button pressed,
  ``bench/launcher_app_driver.py`` presses it) while it updates, sampled every 20 ms.
* **Same update, app and CLI:** two players on the old version, the branch moves; one
  updates through the app's window, the other with ``changeover-launcher sync`` (the
  packaged CLI). Both must download the same bytes.

Run ``python bench/launcher_app.py --help``; ``make bench`` runs it with its defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import (
    BENCHMARKS_MD,
    REPO,
    BenchError,
    Server,
    clean_up_on_signals,
    load_average,
    load_note,
    log,
    machine_info,
    markdown_table,
    median,
    run_cli,
    run_timed,
    running_server,
    source_revision,
    write_section,
)

SECTION = "launcher-app"
QUICK_ARGS = ["--repeat", "1", "--megabytes", "4"]
IMAGE = "game"
BRANCH = "production"
EXE = "changeover-launcher"
DRIVER = Path(__file__).with_name("launcher_app_driver.py")
SAMPLE_S = 0.02
HELLO_QT = """
import json, os, sys, time
from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QApplication, QLabel
class Painted(QObject):
    def eventFilter(self, watched, event):
        if event.type() == QEvent.Type.Paint:
            with open(os.environ["CHANGEOVER_LAUNCHER_TIMINGS"], "a") as out:
                for name in ("painted", "ready"):
                    out.write(json.dumps({"event": name, "t": time.time()}) + "\\n")
            app.removeEventFilter(self)
        return False
app = QApplication(sys.argv)
watcher = Painted()
app.installEventFilter(watcher)
label = QLabel("hello")
label.show()
app.exec()
"""


@dataclass(frozen=True)
class Package:
    folder: Path
    size: int
    files: int
    largest: list[tuple[str, int]]


@dataclass(frozen=True)
class Start:
    painted: float
    ready: float
    idle_rss: int


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=7, help="cold starts of each kind")
    p.add_argument("--megabytes", type=int, default=40, help="size of the game build")
    p.add_argument("--package", type=Path, help="an already built dist/changeover-launcher")
    p.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    return p.parse_args(argv)


# -- the package -----------------------------------------------------------------------------


def build_package(work: Path, without_app: bool) -> Package:
    name = "lean" if without_app else "app"
    dist, build = work / f"dist-{name}", REPO / "build" / f"bench-{name}"
    log(f"[launcher-app] packaging/build.py{' --without-app' if without_app else ''}")
    extra = ["--without-app"] if without_app else []
    script = str(REPO / "packaging" / "build.py")
    run_timed([sys.executable, script, "--dist", str(dist), "--work", str(build), *extra])
    return measure_package(dist / EXE)


def measure_package(folder: Path) -> Package:
    files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    sizes = sorted(
        ((str(p.relative_to(folder)), p.stat().st_size) for p in files), key=lambda x: -x[1]
    )
    return Package(folder, sum(s for _, s in sizes), len(files), sizes[:6])


# -- the studio and the players ----------------------------------------------------------------


def make_build(root: Path, megabytes: int, seed: int, base: Path | None = None) -> None:
    """Files of 1 MB; a second build (``base`` given) changes a third of them."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    for i in range(megabytes):
        path = root / "data" / f"pack{i:03}.bin"
        path.parent.mkdir(exist_ok=True)
        if base is not None and i % 3:
            shutil.copyfile(base / "data" / path.name, path)
        else:
            path.write_bytes(rng.randbytes(1_000_000))
    game = root / "bin" / "game"
    game.parent.mkdir()
    game.write_text(f"#!/bin/sh\necho build {seed}\n")
    game.chmod(0o755)


def publish(srv: Server, build: Path, label: str) -> int:
    env = srv.env
    push = ["push", str(build), "--image", IMAGE, "--label", label, "--wait", "--json"]
    upd = json.loads(run_cli(*push, env=env).stdout)
    diff = ["diff", "create", "--image", IMAGE, "--update", str(upd["id"]), "--wait", "--json"]
    d = json.loads(run_cli(*diff, env=env).stdout)
    v = json.loads(run_cli("diff", "accept", str(d["id"]), "--wait", "--json", env=env).stdout)
    return int(v["number"])


def point(srv: Server, version: int) -> None:
    run_cli("branch", "set", BRANCH, "--image", IMAGE, "--version", str(version), env=srv.env)


def player(work: Path, name: str, srv: Server, root_json: str) -> Path:
    """A launcher.toml of this server; its install goes to ``<folder>/games``."""
    folder = work / name
    folder.mkdir()
    (folder / "root.json").write_text(root_json)
    (folder / "launcher.toml").write_text(
        "\n".join(
            [
                'title = "Bench"',
                f'content_url = "{srv.url}/content"',
                'root = "root.json"',
                f'image = "{IMAGE}"',
                f'install_dir = "{(folder / "games").as_posix()}"',
                "[[branches]]",
                f'name = "{BRANCH}"',
                'title = "Live"',
                "[game.linux]",
                'executable = "bin/game"',
            ]
        )
        + "\n"
    )
    return folder / "launcher.toml"


def cli_sync(exe: Path, srv: Server, config: Path) -> dict[str, object]:
    install = config.parent / "games" / BRANCH
    root = str(config.parent / "root.json")
    content = f"{srv.url}/content"
    command = [str(exe), "sync", content, str(install), "--image", IMAGE, "--branch", BRANCH]
    out = run_timed([*command, "--root", root, "--json"])
    report = json.loads(out.stdout)
    report["seconds"] = out.seconds
    return dict(report)


# -- measuring a process ---------------------------------------------------------------------


def rss(pid: int) -> int:
    """Resident bytes of ``pid`` (0 once it is gone)."""
    try:
        for row in Path(f"/proc/{pid}/status").read_text().splitlines():
            if row.startswith("VmRSS:"):
                return int(row.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cold_start(argv: list[str], env: dict[str, str], timings: Path) -> Start:
    """Spawn, wait for the ``ready`` milestone, sample the idle process, stop it."""
    timings.unlink(missing_ok=True)
    spawned = time.time()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            seen = {}
            if timings.exists():
                for line in timings.read_text().splitlines():
                    row = json.loads(line)
                    seen[row["event"]] = float(row["t"])
            if "ready" in seen and "painted" in seen:
                break
            if proc.poll() is not None:
                raise BenchError(f"{argv[0]} exited with {proc.returncode}: {proc.stderr!r}")
            if time.monotonic() > deadline:
                raise BenchError(f"{argv[0]} was not ready to play in 120 s")
            time.sleep(SAMPLE_S)  # a probe interval, not a guess
        samples = []
        for _ in range(25):  # half a second of idling
            samples.append(rss(proc.pid))
            time.sleep(SAMPLE_S)
        return Start(seen["painted"] - spawned, seen["ready"] - spawned, int(median(samples)))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def app_update(config: Path) -> tuple[dict[str, object], int, int]:
    """The driver's update: its report, idle RSS and peak RSS while updating."""
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), str(config), BRANCH],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    if first != "idle":
        proc.wait(60)
        raise BenchError(f"the app did not offer the update: {first}")
    idle = int(median([rss(proc.pid) for _ in range(10)]))
    proc.stdin.write("\n")
    proc.stdin.flush()
    peak = 0
    while proc.poll() is None:
        peak = max(peak, rss(proc.pid))
        time.sleep(SAMPLE_S)
    report = json.loads(proc.stdout.read().strip().splitlines()[-1])
    if "error" in report:
        raise BenchError(f"the app's update failed: {report['error']}")
    return dict(report), idle, peak


# -- the run -------------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path) -> str:
    load_before = load_average()
    if args.package:
        app, lean = measure_package(args.package), None
    else:
        app, lean = build_package(work, False), build_package(work, True)
    exe = app.folder / EXE
    with running_server() as srv:
        run_cli("image", "create", IMAGE, env=srv.env)
        old, new = work / "build-1", work / "build-2"
        make_build(old, args.megabytes, 1)
        make_build(new, args.megabytes, 2, base=old)
        versions = [publish(srv, old, "1.0.0"), publish(srv, new, "1.1.0")]
        root_json = run_cli("keys", "root", "--data", str(srv.data_dir)).stdout
        point(srv, versions[0])
        configs = {name: player(work, name, srv, root_json) for name in ("ready", "app", "cli")}
        for config in configs.values():
            cli_sync(exe, srv, config)

        timings = work / "timings.jsonl"
        env = {"QT_QPA_PLATFORM": "offscreen", "CHANGEOVER_LAUNCHER_TIMINGS": str(timings)}
        venv_env = {**os.environ, **env}
        hello = work / "hello.py"
        hello.write_text(HELLO_QT)
        ready = str(configs["ready"])
        kinds = {
            "packaged app": ([str(exe), "--config", ready], env),
            "same app, unpackaged (python)": (
                [sys.executable, "-m", "changeover.launcher.app", "--config", ready],
                venv_env,
            ),
            "reference: an empty PySide6 window (python)": ([sys.executable, str(hello)], venv_env),
        }
        starts: dict[str, list[Start]] = {k: [] for k in kinds}
        for i in range(args.repeat):  # interleaved: a slow moment hits every kind alike
            for kind, (argv, kind_env) in kinds.items():
                log(f"[launcher-app] cold start {i + 1}/{args.repeat}: {kind}")
                starts[kind].append(cold_start(argv, kind_env, timings))

        point(srv, versions[1])
        log("[launcher-app] the update through the app's window")
        app_report, app_idle, app_peak = app_update(configs["app"])
        log("[launcher-app] the same update with changeover-launcher sync")
        cli_report = cli_sync(exe, srv, configs["cli"])
    load_after = load_average()
    return report_md(
        args,
        app,
        lean,
        starts,
        (app_report, app_idle, app_peak),
        cli_report,
        load_before,
        load_after,
    )


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def report_md(
    args: argparse.Namespace,
    app: Package,
    lean: Package | None,
    starts: dict[str, list[Start]],
    update: tuple[dict[str, object], int, int],
    cli: dict[str, object],
    load_before: float,
    load_after: float,
) -> str:
    info = machine_info()
    app_report, app_idle, app_peak = update
    lines = [
        f"Command: `{args.invoked_as}` (source {source_revision()}); {info['cpus']} CPUs,"
        f" {info['cpu']}, {info['os']}, Python {info['python']}, {info['date']}.",
        "",
        "**Package** (`packaging/build.py`, one folder, Linux x86-64):",
        "",
    ]
    rows = [["with the desktop app (Qt)", f"{app.size:,}", mib(app.size), str(app.files)]]
    if lean is not None:
        rows.append(
            ["`--without-app` (CLI only)", f"{lean.size:,}", mib(lean.size), str(lean.files)]
        )
    lines += [markdown_table(["package", "bytes", "size", "files"], rows, "lrrr"), ""]
    lines += [
        "Largest files of the app package: "
        + ", ".join(f"`{name}` {mib(size)}" for name, size in app.largest)
        + ".",
        "",
    ]
    lines += [
        f'**Cold start** to the first paint and to "ready to play" (an up-to-date install,'
        f" checked against the server), median of {args.repeat} interleaved starts; resident"
        " memory once ready (idle):",
        "",
    ]
    floor = median([s.ready for s in starts[next(reversed(starts))]])
    rows = []
    for kind, runs in starts.items():
        ready = median([s.ready for s in runs])
        rows.append(
            [
                kind,
                f"{median([s.painted for s in runs]):.2f} s",
                f"{ready:.2f} s",
                f"{ready / floor:.1f}x",
                mib(int(median([s.idle_rss for s in runs]))),
            ]
        )
    lines += [
        markdown_table(
            ["started", "first paint", "ready", "vs empty window", "idle RSS"], rows, "lrrrr"
        ),
        "",
    ]
    equal = app_report["downloaded_bytes"] == cli["downloaded_bytes"]
    lines += [
        f"**The same update** ({args.megabytes} files of 1 MB, a third changed):",
        "",
        markdown_table(
            ["through", "downloaded bytes", "time", "resident memory"],
            [
                [
                    "the app's window (unpackaged), Update pressed",
                    f"{app_report['downloaded_bytes']:,}",
                    f"{float(app_report['seconds']):.2f} s",
                    f"idle {mib(app_idle)}, peak {mib(app_peak)} while updating",
                ],
                [
                    "`changeover-launcher sync` (packaged CLI)",
                    f"{cli['downloaded_bytes']:,}",
                    f"{float(cli['seconds']):.2f} s (process start included)",
                    "",
                ],
            ],
            "lrrl",
        ),
        "",
        f"Equal bytes: **{'yes' if equal else 'NO'}**. The update's memory is the unpackaged"
        " app's (the packaged one has no way to press Update from outside); the cold starts"
        " use no self-update (no `[launcher]` image in the config), whose up-to-date check"
        " adds one metadata round trip.",
        "",
        load_note(load_before, load_after, int(info["cpus"]), "makes every time longer"),
    ]
    if not equal:
        raise BenchError(f"the app and the CLI downloaded different bytes: {app_report} {cli}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None, *, invoked_as: str | None = None) -> int:
    args = parse_args(argv)
    args.invoked_as = (invoked_as or "python bench/launcher_app.py " + " ".join(argv or [])).strip()
    with tempfile.TemporaryDirectory(prefix="co-bench-app-") as tmp:
        body = run(args, Path(tmp))
    write_section(
        args.out, SECTION, "### The players' desktop app (`bench/launcher_app.py`)\n\n" + body
    )
    log(f"wrote section {SECTION} of {args.out}")
    return 0


if __name__ == "__main__":
    clean_up_on_signals()
    sys.exit(main(sys.argv[1:]))
