"""``changeover`` — the command line for everything; each group lives in its own module.

Commands parse arguments, call the API client or a service, and print. Our errors become
one red line and an exit code (see ``cli.output.EXIT_CODES``).
"""

from __future__ import annotations

import sys

import typer

from changeover import __version__, errors
from changeover.cli import builds, server
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


@app.command("version")
def show_version() -> None:
    """Print the Changeover version."""
    typer.echo(__version__)


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
