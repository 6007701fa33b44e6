"""``changeover launcher sync|verify|repair|status``: the player side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from changeover.cli import durations
from changeover.cli.fastpath import launcher_sync, launcher_verify, verify_dict
from changeover.cli.output import JsonOpt, console, human_bytes, print_json
from changeover.errors import ChangeoverError, InvalidInput

launcher_app = typer.Typer(
    help="Install and update a game build from a content URL.", no_args_is_help=True
)

CacheOpt = Annotated[
    Path | None,
    typer.Option("--cache", help="Shared download cache (default: .changeover beside DIR)."),
]
DirArg = Annotated[Path, typer.Argument(help="The install directory (managed as a link).")]


def register(app: typer.Typer) -> None:
    app.add_typer(launcher_app, name="launcher")


def _syncer(
    base_url: str, directory: Path, cache: Path | None, root: Path | None, **kw: Any
) -> Any:
    from changeover.launcher.sync import Syncer

    pinned = root.read_bytes() if root is not None else None
    return Syncer(base_url, directory, cache=cache, root=pinned, **kw)


@launcher_app.command("sync")
def sync(
    base_url: Annotated[str, typer.Argument(help="Content URL, e.g. http://host:8470/content")],
    directory: DirArg,
    image: Annotated[str, typer.Option("--image", help="Image name.")],
    branch: Annotated[str, typer.Option("--branch", help="Branch to follow.")] = "production",
    cache: CacheOpt = None,
    root: Annotated[Path | None, typer.Option("--root", help="Pinned root.json to trust.")] = None,
    limit_rate: Annotated[
        str | None, typer.Option("--limit-rate", help="e.g. 5M (bytes/s).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=32, help="Parallel downloads.")] = 4,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            help="Time to connect, or without data, before a retry: 30, 30s, 2m.",
            parser=durations.parser("--timeout", low=0.1),
        ),
    ] = 30.0,
    min_rate: Annotated[
        str | None,
        typer.Option(
            "--min-rate",
            help="Slowest average a download may have before a retry, e.g. 32K (the default,"
            " bytes/s): each may take --timeout plus its signed size at this rate.",
        ),
    ] = None,
    copy: Annotated[
        bool | None,
        typer.Option(
            "--copy/--no-copy",
            help="Install writable copies, for a game that writes beside its own files"
            " (--no-copy: read-only hard links shared between versions, the default)."
            " Remembered by the install.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Install or update DIR to what BRANCH of IMAGE points at."""
    # The plain forms of this command never get here: cli.fastpath answers them.
    launcher_sync(
        base_url=base_url,
        directory=directory,
        image=image,
        branch=branch,
        cache=cache,
        root=root,
        limit_rate=limit_rate,
        workers=workers,
        timeout=timeout,
        min_rate=min_rate,
        copy=copy,
        as_json=as_json,
    )


@launcher_app.command("verify")
def verify(directory: DirArg, cache: CacheOpt = None, as_json: JsonOpt = False) -> None:
    """Hash every file of DIR against its manifest; exit 1 if anything differs."""
    # The plain forms of this command never get here: cli.fastpath answers them.
    code = launcher_verify(directory, cache, as_json)
    if code:
        raise typer.Exit(code)


@launcher_app.command("repair")
def repair(directory: DirArg, cache: CacheOpt = None, as_json: JsonOpt = False) -> None:
    """Verify DIR and re-fetch whatever is damaged or missing (the player's files stay)."""
    from changeover.launcher.install import Install, default_cache

    record = Install(directory, cache or default_cache(directory)).record() or {}
    base_url = record.get("base_url")
    if not isinstance(base_url, str):
        raise InvalidInput(f"{directory} has no install record; run 'changeover launcher sync'")
    found, report = _syncer(base_url, directory, cache, None).repair()
    if as_json:
        print_json({"found": verify_dict(found), "sync": report.to_dict()})
        return
    damaged = len(found.missing) + len(found.modified)
    console.print(
        f"repaired {damaged} file(s); downloaded {human_bytes(report.downloaded_bytes)}",
        highlight=False,
    )


@launcher_app.command("status")
def status(directory: DirArg, cache: CacheOpt = None, as_json: JsonOpt = False) -> None:
    """What DIR holds, and whether its branch has moved since."""
    from changeover.launcher.install import Install, default_cache

    install = Install(directory, cache or default_cache(directory))
    record = install.record()
    if record is None or install.current_tree() is None:
        raise InvalidInput(f"{directory} is not a changeover install")
    out: dict[str, Any] = {
        k: record.get(k) for k in ("base_url", "image", "branch", "version", "label", "manifest")
    }
    try:
        pointer, _, _ = _syncer(record["base_url"], directory, cache, None).resolve(
            record["image"], record["branch"]
        )
        out["latest_version"] = pointer.get("version")
        out["up_to_date"] = pointer.get("manifest") == record.get("manifest")
    except ChangeoverError as e:  # status informs: an unreachable server is not an error
        out["latest_version"] = None
        out["up_to_date"] = None
        out["remote_error"] = str(e)
    from changeover.launcher import compat
    from changeover.launcher.engine import Engine

    engine = Engine(record["base_url"], directory, record["image"], record["branch"], cache=cache)
    answer = compat.check(engine)  # never raises: offline is "unknown"
    if as_json:
        print_json({**out, "compat": compat.as_dict(answer)})
        return
    for k, v in out.items():
        console.print(f"{k}: {v}", highlight=False)
    # "update required" when the live servers refuse the installed client (seed 002).
    console.print(f"servers: {answer.label} — {answer.message}", highlight=False)
