"""``changeover bots``: simulated players of the sample game; prints what happened as JSON."""

from __future__ import annotations

from typing import Annotated

import typer

from changeover.cli import durations
from changeover.cli.output import ServerOpt, TokenOpt, print_json
from changeover.errors import InvalidInput


def register(app: typer.Typer) -> None:
    app.command("bots")(bots)


def bots(
    fleet: Annotated[str, typer.Option(help="Fleet to play on.")],
    players: Annotated[int, typer.Option(help="Simultaneous players.", min=1, max=2000)] = 10,
    duration: Annotated[
        float,
        typer.Option(help="How long to play: 30, 90s, 5m.", parser=durations.parser("--duration")),
    ] = 30.0,
    session_min: Annotated[
        float,
        typer.Option(
            help="Shortest game session: 2, 2s.", parser=durations.parser("--session-min")
        ),
    ] = 2.0,
    session_max: Annotated[
        float,
        typer.Option(help="Longest game session: 8, 1m.", parser=durations.parser("--session-max")),
    ] = 8.0,
    client_version: Annotated[str | None, typer.Option(help="The bots' client version.")] = None,
    region: Annotated[
        list[str] | None, typer.Option("--region", help="Preferred region, repeatable.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for repeatable session lengths.")] = None,
    strict: Annotated[
        bool, typer.Option(help="Exit 1 if any session was dropped without notice.")
    ] = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
) -> None:
    """Play the sample game (examples/arena) with bots: allocate, connect, play for a random
    session length, move on a shutdown notice. Prints sessions completed, dropped without
    notice and moved."""
    from changeover.bots import BotConfig, run_bots

    if not server:
        raise InvalidInput("no server given: pass --server URL or set CHANGEOVER_URL")
    if not 0 < session_min <= session_max:
        raise InvalidInput("need 0 < --session-min <= --session-max")
    report = run_bots(
        BotConfig(
            server=server,
            token=token,
            fleet=fleet,
            players=players,
            duration_s=duration,
            session_min_s=session_min,
            session_max_s=session_max,
            client_version=client_version,
            regions=tuple(region or ()),
            seed=seed,
        )
    )
    print_json(report.to_dict())
    if strict and report.dropped_without_notice:
        raise typer.Exit(1)
