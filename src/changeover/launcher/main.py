"""``changeover-launcher``: the one executable a studio hands to its players.

    changeover-launcher [--config PATH]          start the desktop app (after a self-update
                                                 when frozen)
    changeover-launcher sync|verify|repair|status …   as ``changeover launcher …``
    changeover-launcher self-update [--config PATH] [--json]
    changeover-launcher --version                the packaged version

The commands are the CLI's own: their plain forms go to :mod:`changeover.cli.fastpath`,
anything else (``--help``, a mistake) to the Typer app of :mod:`changeover.cli.standalone`,
which registers the commands of ``changeover launcher``; no option is defined twice. Only
the desktop app is imported by name when it starts (``changeover.launcher.app``): a build
without it still answers every command, and says so when started without one.

``launcher.toml`` is ``--config``, else the one packaged beside the executable (frozen),
else ``./launcher.toml``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from changeover.errors import ChangeoverError

COMMANDS = frozenset({"sync", "verify", "repair", "status"})
"""The commands of ``changeover launcher`` this executable answers the same way."""
NO_APP = 2
"""Exit code when the desktop app is not part of this build."""
CONFIG_NAME = "launcher.toml"
APP_MODULE = "changeover.launcher.app"
"""The desktop app: its ``run(config: Path) -> int | None`` shows the window until it
closes and returns the exit code."""

RouteKind = Literal["start", "version", "command", "self-update", "typer"]


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    config: Path | None = None
    as_json: bool = False


def route(args: list[str]) -> Route:
    """What the command line asks for; ``typer`` for anything the Typer app must parse
    (help, a mistake), and for the commands of ``changeover launcher`` (``command``)."""
    from changeover.cli.fastpath import FLAG, parse

    if args == ["--version"]:
        return Route("version")
    if not args or args[0].startswith("--config"):
        parsed = parse(args, 0, {"--config": Path})
        return Route("start", parsed[1].get("--config")) if parsed else Route("typer")
    if args[0] == "self-update":
        parsed = parse(args[1:], 0, {"--config": Path, "--json": FLAG})
        if parsed is None:
            return Route("typer")
        return Route("self-update", parsed[1].get("--config"), bool(parsed[1].get("--json")))
    if args[0] in COMMANDS:
        return Route("command")
    return Route("typer")


def frozen() -> bool:
    """Whether this is the packaged executable (PyInstaller sets ``sys.frozen``)."""
    return bool(getattr(sys, "frozen", False))


def version() -> str:
    """The version ``packaging/build.py`` wrote into the package; ``dev`` unpackaged."""
    try:
        return Path(__file__).with_name("version.txt").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return "dev"


def default_config() -> Path:
    if frozen():
        return Path(sys.executable).parent / CONFIG_NAME
    return Path(CONFIG_NAME)


def main() -> None:
    """The ``changeover-launcher`` command."""
    from changeover.cli.plain import print_error

    try:
        code = run(sys.argv[1:])
    except ChangeoverError as e:
        sys.exit(print_error(e))
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)


def run(args: list[str]) -> int:
    """The exit code of the command line ``args``.

    Raises:
        ChangeoverError: a command failed (the caller prints it with its exit code).
    """
    where = route(args)
    if where.kind == "version":
        sys.stdout.write(version() + "\n")
        return 0
    if where.kind == "start":
        return start(where.config or default_config(), args)
    if where.kind == "self-update":
        return self_update(where.config or default_config(), where.as_json)
    if where.kind == "command":
        from changeover.cli.fastpath import run as fast

        code = fast(["launcher", *args])
        if code is not None:
            return code
    from changeover.cli.standalone import run_typer

    return run_typer(args)


def self_update(config_path: Path, as_json: bool) -> int:
    """``self-update``: install the launcher's branch if it moved (no restart)."""
    from changeover.cli.plain import JOB_FAILED
    from changeover.launcher.config import load
    from changeover.launcher.selfupdate import SelfUpdater, running_folder

    outcome = SelfUpdater(load(config_path), version(), running_folder()).run()
    if as_json:
        data = {
            "status": outcome.status,
            "executable": str(outcome.executable) if outcome.executable else None,
            "version": outcome.version,
            "message": outcome.message,
            "downloaded_bytes": outcome.downloaded_bytes,
        }
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(outcome.message + "\n")
    return JOB_FAILED if outcome.status in ("failed", "not-configured") else 0


def start(config_path: Path, args: list[str]) -> int:
    """No command: update the launcher itself (frozen only, once), then open the app."""
    from changeover.launcher.selfupdate import RESTARTED_ENV

    restarted = os.environ.pop(RESTARTED_ENV, None)  # the game started later need not see it
    if frozen() and restarted is None:
        code = _update_and_restart(config_path, args)
        if code is not None:
            return code
    return open_app(config_path)


def _update_and_restart(config_path: Path, args: list[str]) -> int | None:
    """Self-update; the exit code if another launcher took over, ``None`` to go on here."""
    from changeover.launcher.config import load
    from changeover.launcher.selfupdate import SelfUpdater, is_running, restart, running_folder

    try:
        config = load(config_path)
    except ChangeoverError:
        return None  # the app shows what is wrong with the configuration
    outcome = SelfUpdater(config, version(), running_folder()).run()
    if outcome.status != "up-to-date":
        sys.stderr.write(f"changeover-launcher {version()}: {outcome.message}\n")
    exe = outcome.executable
    if exe is None or is_running(exe, Path(sys.executable)):
        return None
    try:
        return restart(exe, args, outcome.version or "?")
    except OSError as e:
        sys.stderr.write(f"changeover-launcher: cannot start {exe} ({e}); going on with this one\n")
        return None


def open_app(config_path: Path) -> int:
    """Start the desktop app; ``NO_APP`` with a clear message when this build lacks it."""
    import importlib

    try:
        # By name: a build without the app (or without Qt) still answers every command.
        app = importlib.import_module(APP_MODULE)
    except ImportError as e:
        sys.stderr.write(
            f"changeover-launcher {version()}: the desktop app is not part of this build"
            f" ({e}); the commands sync, verify, repair, status and self-update work"
            " (changeover-launcher --help)\n"
        )
        return NO_APP
    return int(app.run(config_path) or 0)
