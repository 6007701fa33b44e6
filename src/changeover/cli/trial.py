"""``changeover update trial|trials`` and ``changeover image require-trial``: run an
update on a build machine before its diff (seed 000, step 1; rules in
``control.fleet.trials``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from changeover.cli import durations
from changeover.cli.builds import image_app, update_app
from changeover.cli.output import JOB_FAILED, JsonOpt, ServerOpt, TokenOpt, console, print_json
from changeover.client import ApiClient
from changeover.control.states import JobState


def register(app: typer.Typer) -> None:
    """Nothing of its own: the commands join ``update`` and ``image`` (``cli.builds``)."""


def trial_line(t: dict[str, Any]) -> str:
    where = f" on {t['host']}" if t["host"] else ""
    if t["port"] and t["status"] not in (JobState.COMPLETED, JobState.FAILED):
        where += f" ({t['address']}:{t['port']})"
    verdict = f"{t['result']}: " if t["result"] else ""
    return (
        f"trial {t['id']} of update {t['update_id']} with {t['profile']}{where}:"
        f" {t['status_name']} ({t['status']}) — {verdict}{t['message']}"
    )


@update_app.command("trial")
def update_trial(
    update_id: int,
    fleet: Annotated[str, typer.Option(help="The build machine's fleet.")],
    profile: Annotated[
        str | None, typer.Option(help="Whose run spec to use (default: the fleet's active one).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="A host of the fleet (default: any).")] = None,
    hold: Annotated[
        float,
        typer.Option(
            help="How long the game server must stay ready to pass: 30s, 5m.",
            parser=durations.parser("--hold"),
        ),
    ] = 60.0,
    ready_timeout: Annotated[
        float,
        typer.Option(
            help="How long it may take to get ready.", parser=durations.parser("--ready-timeout")
        ),
    ] = 300.0,
    wait: Annotated[
        bool, typer.Option("--wait", help="Block until it is judged; exit non-zero if it failed.")
    ] = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Run an update on a build machine and judge it, before its diff (push or admin)."""
    body: dict[str, Any] = {"fleet": fleet, "hold_s": hold, "ready_timeout_s": ready_timeout}
    if profile is not None:
        body["profile"] = profile
    if host is not None:
        body["host"] = host
    with ApiClient(server, token) as c:
        out = c.post(f"/updates/{update_id}/trials", json=body)
        if wait:
            if not as_json:
                console.print(trial_line(out), highlight=False, soft_wrap=True)
            out = c.wait_job(f"/trials/{out['id']}", timeout_s=hold + ready_timeout + 600)
    if as_json:
        print_json(out)
    else:
        console.print(trial_line(out), highlight=False, soft_wrap=True)
    if wait and out["status"] == JobState.FAILED:
        raise typer.Exit(JOB_FAILED)


@update_app.command("trials")
def update_trials(
    update_id: int, server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """List an update's build machine trials."""
    with ApiClient(server, token) as c:
        rows = c.get(f"/updates/{update_id}/trials")
    if as_json:
        print_json(rows)
        return
    for t in rows:
        console.print(trial_line(t), highlight=False, soft_wrap=True)
    if not rows:
        console.print(f"update {update_id} has not been tried", highlight=False)


@image_app.command("require-trial")
def image_require_trial(
    name: str,
    off: Annotated[bool, typer.Option("--off", help="No longer require one.")] = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Require a passed build machine trial of an update before its diff (admin)."""
    with ApiClient(server, token) as c:
        out = c.request("PATCH", f"/images/{name}", json={"require_trial": not off})
    says = "requires" if out["require_trial"] else "does not require"
    line = f"image {name} {says} a passed build machine trial before a diff"
    print_json(out) if as_json else console.print(line, highlight=False)
