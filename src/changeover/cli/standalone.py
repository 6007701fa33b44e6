"""The Typer app of ``changeover-launcher``: the commands of ``changeover launcher`` at the
top level, plus ``self-update``.

:mod:`changeover.launcher.main` answers the plain command lines itself; this app parses
the rest (``--help``, a typo, a bad value) with the help texts and messages of the CLI.
The four player commands are ``cli.launcher``'s own registrations, not copies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from changeover.cli.launcher import launcher_app
from changeover.cli.output import JsonOpt
from changeover.cli.plain import print_error
from changeover.errors import ChangeoverError

PROG = "changeover-launcher"


def _print_version(value: bool) -> None:
    if value:
        from changeover.launcher.main import version

        typer.echo(version())
        raise typer.Exit


def _root(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """The game's launcher. With no command (and optionally --config PATH) it updates
    itself and opens its window; the commands install, check and repair a game from the
    command line."""


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="The launcher.toml (default: the one beside the executable)."),
]


def self_update_cmd(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Install the launcher's own branch if it moved; the next start runs it."""
    from changeover.launcher.main import default_config, self_update

    code = self_update(config or default_config(), as_json)
    if code:
        raise typer.Exit(code)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name=PROG,
        no_args_is_help=False,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.registered_commands.extend(launcher_app.registered_commands)
    app.command("self-update")(self_update_cmd)
    app.callback()(_root)
    return app


def run_typer(args: list[str]) -> int:
    """Parse and run ``args`` with the Typer app; its exit code."""
    try:
        build_app()(args=args, prog_name=PROG)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except ChangeoverError as e:
        return print_error(e)
    return 0
