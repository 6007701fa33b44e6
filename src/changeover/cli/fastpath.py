"""Commands answered without building the Typer app.

``changeover launcher sync`` and ``launcher verify`` run on players' machines on every
update, and their wall time is what players wait: importing Typer, Click and Rich takes
longer than hashing a few hundred megabytes with BLAKE3, or than many a small update. So
their plain forms are parsed here with the standard library. Anything else (``--help``, a
typo, an option we do not know, a value out of range) returns ``None`` and goes to the
Typer app, which has the help texts and the error messages, and which calls the same
functions once it has parsed the line.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from changeover.cli import durations
from changeover.cli.plain import JOB_FAILED, human_bytes, print_error, print_json
from changeover.errors import ChangeoverError, InvalidInput

FLAG = None
"""In an option table: the option takes no value."""
Options = dict[str, Callable[[str], Any] | None]


def main() -> None:
    """The ``changeover`` command."""
    try:
        code = run(sys.argv[1:])
    except ChangeoverError as e:
        sys.exit(print_error(e))
    except KeyboardInterrupt:
        sys.exit(130)
    if code is not None:
        sys.exit(code)
    from changeover.cli.main import main as full_cli

    full_cli()


def run(args: list[str]) -> int | None:
    """The exit code of the command in ``args`` (``sys.argv[1:]``), or ``None`` when it
    is not one this module answers."""
    if args[:2] == ["launcher", "verify"]:
        parsed = _verify_args(args[2:])
        if parsed is not None:
            return launcher_verify(*parsed)
    if args[:2] == ["launcher", "sync"]:
        sync_args = _sync_args(args[2:])
        if sync_args is not None:
            return launcher_sync(**sync_args)
    return None


def parse(
    args: list[str], positionals: int, options: Options
) -> tuple[list[str], dict[str, Any]] | None:
    """``positionals`` arguments and ``options`` (``--name VALUE``, ``--name=VALUE`` or a
    ``FLAG``), in any order, each option at most once; ``None`` for anything else,
    including a value its converter refuses (``ValueError``)."""
    found: list[str] = []
    values: dict[str, Any] = {}
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        name, eq, inline = arg.partition("=")
        if name in options and name not in values:
            convert = options[name]
            if convert is FLAG:
                if eq:
                    return None
                values[name] = True
                continue
            if eq:
                raw = inline
            elif rest and not rest[0].startswith("-"):
                raw = rest.pop(0)
            else:
                return None
            if not raw:
                return None
            try:
                values[name] = convert(raw)
            except ValueError:
                return None
        elif arg.startswith("-") or not arg or len(found) == positionals:
            return None
        else:
            found.append(arg)
    return (found, values) if len(found) == positionals else None


def _duration(flag: str, low: float) -> Callable[[str], float]:
    """The CLI's duration syntax (``cli.durations``); a bad one is left to Typer to report."""

    def convert(raw: str) -> float:
        try:
            return durations.seconds(flag, raw, low=low)
        except InvalidInput as e:
            raise ValueError(raw) from e

    return convert


def _in_range(kind: Callable[[str], Any], low: float, high: float) -> Callable[[str], Any]:
    def convert(raw: str) -> Any:
        value = kind(raw)
        if not low <= value <= high:
            raise ValueError(raw)
        return value

    return convert


def _verify_args(args: list[str]) -> tuple[Path, Path | None, bool] | None:
    """DIR [--cache PATH] [--json], in any order, or ``None``."""
    parsed = parse(args, 1, {"--cache": Path, "--json": FLAG})
    if parsed is None:
        return None
    (directory,), opts = parsed
    return Path(directory), opts.get("--cache"), bool(opts.get("--json"))


SYNC_OPTIONS: Options = {
    "--image": str,
    "--branch": str,
    "--cache": Path,
    "--root": Path,
    "--limit-rate": str,
    "--workers": _in_range(int, 1, 32),
    "--timeout": _duration("--timeout", 0.1),
    "--min-rate": str,
    "--copy": FLAG,
    "--no-copy": FLAG,
    "--json": FLAG,
}


def _sync_args(args: list[str]) -> dict[str, Any] | None:
    """BASE_URL DIR --image NAME and ``SYNC_OPTIONS``, as ``launcher_sync``'s keywords."""
    parsed = parse(args, 2, SYNC_OPTIONS)
    if parsed is None or "--image" not in parsed[1]:
        return None
    (base_url, directory), opts = parsed
    if "--copy" in opts and "--no-copy" in opts:
        return None  # Typer says which wins
    return {
        "base_url": base_url,
        "directory": Path(directory),
        "image": opts["--image"],
        "branch": opts.get("--branch", "production"),
        "cache": opts.get("--cache"),
        "root": opts.get("--root"),
        "limit_rate": opts.get("--limit-rate"),
        "workers": opts.get("--workers", 4),
        "timeout": opts.get("--timeout", 30.0),
        "min_rate": opts.get("--min-rate"),
        "copy": True if "--copy" in opts else False if "--no-copy" in opts else None,
        "as_json": bool(opts.get("--json")),
    }


def parse_rate(value: str | None, option: str = "--limit-rate") -> int | None:
    """'500K', '5M', '1G' or plain bytes per second."""
    if value is None:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?(?:/s)?", value.strip(), re.IGNORECASE)
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2).upper()] if m else 0
    if m is None or int(float(m.group(1)) * scale) <= 0:
        raise InvalidInput(f"{option} {value!r}: use a number of bytes/s such as 500K or 5M")
    return int(float(m.group(1)) * scale)


def launcher_sync(
    *,
    base_url: str,
    directory: Path,
    image: str,
    branch: str,
    cache: Path | None,
    root: Path | None,
    limit_rate: str | None,
    workers: int,
    timeout: float,
    as_json: bool,
    min_rate: str | None = None,
    copy: bool | None = None,
) -> int:
    """Install or update ``directory`` to what ``branch`` of ``image`` points at.

    ``copy``: install writable copies (True) or read-only hard links (False); ``None``
    keeps what the install was made with."""
    from changeover.cli.progress import ProgressLine
    from changeover.launcher.engine import Engine, ProgressEvent
    from changeover.launcher.fetch import DEFAULT_MIN_RATE

    rate = parse_rate(limit_rate)
    floor = parse_rate(min_rate, "--min-rate") or DEFAULT_MIN_RATE
    pinned = root.read_bytes() if root is not None else None
    engine = Engine(
        base_url,
        directory,
        image,
        branch,
        cache=cache,
        root=pinned,
        max_bytes_per_s=rate,
        workers=workers,
        timeout_s=timeout,
        min_rate=floor,
        install_mode=None if copy is None else "copy" if copy else "link",
    )
    with ProgressLine(sys.stderr, enabled=not as_json) as line:

        def show(event: ProgressEvent) -> None:
            if event.phase == "downloading" and event.total_bytes:
                line.set(event.done_bytes, event.total_bytes)

        report = engine.sync(show)
    if as_json:
        print_json(report.to_dict())
    elif report.already_current:
        print(f"{directory} is up to date: {image} {branch} version {report.version}")
    else:
        label = f" ({report.label})" if report.label else ""
        got, size = human_bytes(report.downloaded_bytes), human_bytes(report.total_bytes)
        sources = (
            f"{report.fetched_blobs} blobs, {report.applied_patches} patches,"
            f" {report.reused_objects} reused"
        )
        print(
            f"{directory} -> {image} {branch} version {report.version}{label}:"
            f" downloaded {got} of a {size} build ({sources}) in {report.seconds:.1f}s"
        )
    return 0


def launcher_verify(directory: Path, cache: Path | None, as_json: bool) -> int:
    """Hash every file of ``directory`` against its manifest: 0 if all match, else
    ``JOB_FAILED``; what differs is printed."""
    # Offline and local: none of the network, TUF or control-plane modules get imported.
    from changeover.launcher.install import Install, default_cache, verify_tree

    install = Install(directory, cache or default_cache(directory))
    manifest = install.current_manifest()
    if manifest is None or install.current_tree() is None:
        raise InvalidInput(f"{directory} is not a changeover install")
    report = verify_tree(directory, manifest)
    if as_json:
        print_json(verify_dict(report))
    else:
        lines = [f"{report.ok} files ok, {human_bytes(report.bytes_hashed)} hashed"]
        for kind in ("missing", "modified"):
            lines += [f"  {kind}: {path}" for path in getattr(report, kind)]
        # Not damage: kept by every update and repair.
        lines += [f"  not shipped (kept): {path}" for path in report.extra]
        lines += [f"  user data (kept): {path}" for path in report.user_data]
        sys.stdout.write("\n".join(lines) + "\n")
    return 0 if report.clean else JOB_FAILED


def verify_dict(report: Any) -> dict[str, Any]:
    return {
        "clean": report.clean,
        "ok": report.ok,
        "missing": report.missing,
        "modified": report.modified,
        "extra": report.extra,
        "user_data": report.user_data,
        "bytes_hashed": report.bytes_hashed,
    }
