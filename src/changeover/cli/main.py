"""``changeover`` — the command line for everything; each group lives in its own module.

Commands parse arguments, call the API client or a service, and print. Our errors become
one red line and an exit code (see ``cli.plain.EXIT_CODES``).
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

from changeover import __version__, errors
from changeover.cli.plain import print_error

GROUPS = (
    "server",
    "builds",
    "trial",
    "news",
    "launcher",
    "keys",
    "fleet",
    "mirror",
    "agent",
    "bots",
    "patchjob",
)
"""The modules of ``changeover.cli`` that register commands, in registration order."""
ALONE = frozenset({"launcher"})
"""Command groups that run with only their own module imported: ``changeover launcher …``
runs on players' machines, where start-up time is part of every sync and verify (the
other modules pull in the HTTP API client, the control plane's models and more)."""


def build_app(groups: tuple[str, ...] = GROUPS) -> typer.Typer:
    """The CLI with the commands of ``groups`` (every group by default)."""
    app = typer.Typer(
        name="changeover",
        help="Ship a new game build with zero downtime.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for name in groups:
        importlib.import_module(f"changeover.cli.{name}").register(app)
    app.callback()(_root)
    return app


def _groups_for(argv: list[str]) -> tuple[str, ...]:
    first = argv[1] if len(argv) > 1 else ""
    return (first,) if first in ALONE else GROUPS


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # the full CLI, built on first use (for tests and tooling)
        return build_app()
    raise AttributeError(name)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit


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
    """The full CLI (``cli.fastpath.main``, the ``changeover`` command, comes here for all
    but the few commands it answers itself)."""
    try:
        build_app(_groups_for(sys.argv))()
    except errors.ChangeoverError as e:
        sys.exit(print_error(e))
    except KeyboardInterrupt:
        sys.exit(130)
