"""``changeover keys root|rotate``: the signing keys of the content tree (run on the server)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from changeover.cli.output import console
from changeover.errors import InvalidInput

if TYPE_CHECKING:  # TUF and its signers load only for a keys command, not for every one
    from changeover.content.trust import TrustRepo

keys_app = typer.Typer(help="Signing keys of the published metadata.", no_args_is_help=True)

DataOpt = Annotated[Path, typer.Option("--data", help="The server's data directory.")]


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _repo(data: Path) -> TrustRepo:
    """The server's signed metadata in ``data``, published where the server publishes
    (its content bucket too, from the same ``CHANGEOVER_*`` settings)."""
    from changeover import settings
    from changeover.control.publishing import open_store

    if not (data / "keys").is_dir():
        raise InvalidInput(f"{data} holds no keys: is it a server data directory?")
    return open_store(settings.load(data_dir=data))[1]


@keys_app.command("root")
def root(
    data: DataOpt,
    version: Annotated[int, typer.Option(help="Which root version (1 = the first).")] = 1,
) -> None:
    """Print a root.json, to ship with launchers as their pinned trust anchor (--root)."""
    sys.stdout.buffer.write(_repo(data).root_bytes(version))


@keys_app.command("rotate")
def rotate(
    role: Annotated[str, typer.Argument(help="root, targets, snapshot or timestamp.")],
    data: DataOpt,
) -> None:
    """Replace a role's key; clients follow through the new, cross-signed root."""
    _repo(data).rotate(role)
    console.print(f"{role} key rotated; new root version published", highlight=False)
