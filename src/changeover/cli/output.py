"""How the CLI prints: JSON for scripts, tables for people (errors: ``cli.plain``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from changeover.cli.plain import JOB_FAILED, human_bytes, print_json

__all__ = ["JOB_FAILED", "human_bytes", "print_json"]  # re-exported for the command modules

console = Console()
err_console = Console(stderr=True)

ServerOpt = Annotated[
    str,
    typer.Option(
        "--server",
        envvar="CHANGEOVER_URL",
        help="Control-plane URL; several replicas' URLs, comma-separated, are tried in turn.",
        show_default=False,
    ),
]
TokenOpt = Annotated[
    str,
    typer.Option("--token", envvar="CHANGEOVER_TOKEN", help="Access token.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
WaitOpt = Annotated[
    bool, typer.Option("--wait", help="Block until the job ends; exit non-zero if it fails.")
]


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("-" if v is None else str(v) for v in r))
    console.print(t)


def job_line(kind: str, job: dict[str, Any]) -> None:
    line = f"{kind} {job['id']}: {job['status_name']} ({job['status']})"
    if job.get("error"):
        line += f" — {job['error']}"
    console.print(line, highlight=False, soft_wrap=True)


def finish_job(kind: str, job: dict[str, Any], as_json: bool) -> None:
    """Print a job's final state; exit 1 if it failed."""
    if as_json:
        print_json(job)
    else:
        job_line(kind, job)
    if job["status"] == 6:
        raise typer.Exit(JOB_FAILED)
