"""``changeover server`` and ``changeover token …``."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Annotated

import typer

from changeover import settings as settings_mod
from changeover.cli import durations
from changeover.cli.output import JsonOpt, ServerOpt, TokenOpt, console, print_json, table, when
from changeover.client import ApiClient
from changeover.settings import DEFAULT_PORT

token_app = typer.Typer(help="Create, list and revoke access tokens.", no_args_is_help=True)

DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data", help="Data directory (SQLite database, content store).", show_default=False
    ),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option("--database", envvar="CHANGEOVER_DATABASE_URL", help="SQLAlchemy database URL."),
]


def register(app: typer.Typer) -> None:
    app.command("server")(serve)
    app.add_typer(token_app, name="token")


def serve(
    data: DataOpt = Path("changeover-data"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = DEFAULT_PORT,
    database: DatabaseOpt = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            envvar="CHANGEOVER_LOG_FORMAT",
            help="text, or json: one object per line with request and job ids.",
        ),
    ] = None,
) -> None:
    """Run the control plane (HTTP API with its docs at /docs, dashboard at /ui, metrics at
    /metrics) in the foreground, logging to the terminal, until Ctrl-C or SIGTERM."""
    import uvicorn

    from changeover.control import logs
    from changeover.control.app import create_app
    from changeover.control.http_protocol import CoalescingHttpToolsProtocol

    s = settings_mod.load(
        data_dir=data, host=host, port=port, database_url=database, log_format=log_format
    )
    logs.configure(s.log_format)
    app = create_app(s)
    # What start-up built (modules, routes, the schema) lives as long as the process: out
    # of the collector's sight, full collections no longer scan it and pause requests.
    gc.collect()
    gc.freeze()
    logging.getLogger("changeover.control").info(
        "control plane on http://%s:%d (data: %s)", host, port, s.data_dir
    )
    # The dashboard's live streams stay open; give them a few seconds at shutdown, not forever.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        log_config=None,
        http=CoalescingHttpToolsProtocol,
        timeout_graceful_shutdown=5,
    )


@token_app.command("create")
def token_create(
    scope: Annotated[str, typer.Option(help="admin, ci, agent, matchmaker or viewer.")],
    name: Annotated[str, typer.Option(help="Who or what uses it.")] = "",
    expires_in: Annotated[
        float | None,
        typer.Option(
            "--expires-in",
            help="Time until it expires: 3600, 90d, 12h.",
            parser=durations.parser("--expires-in", low=1),
        ),
    ] = None,
    data: DataOpt = None,
    database: DatabaseOpt = None,
    server: Annotated[str | None, typer.Option("--server", envvar="CHANGEOVER_URL")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="CHANGEOVER_TOKEN")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token; it is shown once.

    With --data or --database it is written straight into the database (how the first admin
    token is made, offline); otherwise it is asked of the server with an admin token.
    """
    name = name or f"{scope} token"
    if data is not None or database is not None:
        from changeover.control.auth import services as auth
        from changeover.control.db import Database

        s = settings_mod.load(data_dir=data, database_url=database)
        s.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(s.db_url)
        try:
            db.migrate()
            with db.write() as session:
                row, secret = auth.create_token(session, scope, name, expires_in)
                out = {**auth.token_dict(row), "token": secret}
        finally:
            db.dispose()
    else:
        with ApiClient(server or "", token) as c:
            out = c.post("/tokens", json={"scope": scope, "name": name, "expires_in_s": expires_in})
    if as_json:
        print_json(out)
    else:
        console.print(f"token {out['id']} ({out['scope']}), shown once:", highlight=False)
        typer.echo(out["token"])


@token_app.command("list")
def token_list(server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """List tokens (never their secrets)."""
    with ApiClient(server, token) as c:
        rows = c.get("/tokens")
    if as_json:
        print_json(rows)
        return
    table(
        "tokens",
        ["id", "name", "scope", "created", "expires", "revoked"],
        [
            [
                r["id"],
                r["name"],
                r["scope"],
                when(r["created_at"]),
                when(r["expires_at"]),
                when(r["revoked_at"]),
            ]
            for r in rows
        ],
    )


@token_app.command("revoke")
def token_revoke(token_id: int, server: ServerOpt = "", token: TokenOpt = "") -> None:
    """Revoke a token by id."""
    with ApiClient(server, token) as c:
        c.delete(f"/tokens/{token_id}")
    console.print(f"token {token_id} revoked")
