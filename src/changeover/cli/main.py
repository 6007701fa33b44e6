"""``changeover`` — the command line for everything; each group lives in its own module.

Commands parse arguments, call the API client or a service, and print. Our errors become
one red line and an exit code (see ``cli.output.EXIT_CODES``).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from changeover import __version__, errors
from changeover.cli import agent, bots, builds, fleet, keys, launcher, server
from changeover.cli.output import fail

app = typer.Typer(
    name="changeover",
    help="Ship a new game build with zero downtime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
server.register(app)
builds.register(app)
launcher.register(app)
keys.register(app)
fleet.register(app)
agent.register(app)
bots.register(app)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit


@app.callback()
def _root(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Ship a new game build with zero downtime."""


def main() -> None:
    try:
        app()
    except errors.ChangeoverError as e:
        try:
            fail(e)
        except typer.Exit as ex:
            sys.exit(ex.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
