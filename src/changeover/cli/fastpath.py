"""Commands answered without building the Typer app.

``changeover launcher verify`` runs on players' machines after every update, and its
wall time is what they wait: importing Typer, Click and Rich takes longer than hashing a
few hundred megabytes with BLAKE3. So its plain forms are parsed here with the standard
library. Anything else (``--help``, a typo, an option we do not know) returns ``None``
and goes to the Typer app, which has the help texts and the error messages.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from changeover.cli.plain import JOB_FAILED, human_bytes, print_error, print_json
from changeover.errors import ChangeoverError, InvalidInput


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
    return None


def _verify_args(args: list[str]) -> tuple[Path, Path | None, bool] | None:
    """DIR [--cache PATH | --cache=PATH] [--json], in any order, or ``None``."""
    directory: Path | None = None
    cache: Path | None = None
    as_json = False
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--json":
            as_json = True
        elif arg == "--cache" and rest and not rest[0].startswith("-"):
            cache = Path(rest.pop(0))
        elif arg.startswith("--cache=") and len(arg) > len("--cache="):
            cache = Path(arg.removeprefix("--cache="))
        elif arg.startswith("-") or directory is not None or not arg:
            return None
        else:
            directory = Path(arg)
    return None if directory is None else (directory, cache, as_json)


def launcher_verify(directory: Path, cache: Path | None, as_json: bool) -> int:
    """Hash every file of ``directory`` against its manifest: 0 if all match, else
    ``JOB_FAILED``; what differs is printed."""
    # Offline and local: none of the network, TUF or control-plane modules get imported.
    from changeover.launcher.install import Install, default_cache, verify_tree

    install = Install(directory, cache or default_cache(directory))
    manifest = install.current_manifest()
    if manifest is None or install.current_tree() is None:
        raise InvalidInput(f"{directory} is not a changeover install")
    report = verify_tree(directory, manifest, install.current_chunks())
    if as_json:
        print_json(verify_dict(report))
    else:
        lines = [f"{report.ok} files ok, {human_bytes(report.bytes_hashed)} hashed"]
        for kind in ("missing", "modified", "extra"):
            lines += [f"  {kind}: {path}" for path in getattr(report, kind)]
        sys.stdout.write("\n".join(lines) + "\n")
    return 0 if report.clean else JOB_FAILED


def verify_dict(report: Any) -> dict[str, Any]:
    return {
        "clean": report.clean,
        "ok": report.ok,
        "missing": report.missing,
        "modified": report.modified,
        "extra": report.extra,
        "bytes_hashed": report.bytes_hashed,
    }
