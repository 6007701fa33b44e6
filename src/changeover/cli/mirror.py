"""``changeover mirror create|list|show|release`` and ``changeover profile rebind``: seed
000's mirror profiles, a release in one command (rules in ``control.fleet.mirrors``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from changeover.cli.fleet import DrainOpt, profile_app, show, switch_line, wait_switch
from changeover.cli.output import (
    JOB_FAILED,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    console,
    print_json,
    table,
)
from changeover.client import ApiClient
from changeover.control.states import JobState

mirror_app = typer.Typer(
    help="Mirror profiles: A and B take turns at a branch's versions.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(mirror_app, name="mirror")


def _mirror_line(m: dict[str, Any]) -> str:
    sides = ", ".join(f"{p['profile']} v{p['version']} ({p['role']})" for p in m["profiles"])
    state = "up to date" if m["up_to_date"] else f"branch at v{m['branch_version']}"
    fleets = ", ".join(m["fleets"]) or "no fleet yet"
    return f"mirror {m['name']} of {m['image']}/{m['branch']}: {sides}; {fleets}; {state}"


def _say(line: str) -> None:
    console.print(line, highlight=False, soft_wrap=True)


@mirror_app.command("create")
def mirror_create(
    name: str,
    image: Annotated[str, typer.Option(help="Image name.")],
    branch: Annotated[str, typer.Option(help="The branch the pair follows (production …).")],
    profiles: Annotated[str, typer.Option(help="The two profiles: A,B.")],
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Pair two profiles to take turns at a branch's versions (admin)."""
    body = {"name": name, "image": image, "branch": branch, "profiles": profiles.split(",")}
    with ApiClient(server, token) as c:
        out = c.post("/mirrors", json=body)
    show(out, as_json, _mirror_line(out))


@mirror_app.command("list")
def mirror_list(server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """List mirrors, which profile is live and whether it runs the branch's version."""
    with ApiClient(server, token) as c:
        rows = c.get("/mirrors")
    if as_json:
        print_json(rows)
        return
    table(
        "mirrors",
        ["name", "image", "branch", "profiles", "fleets", "up to date"],
        [
            [
                r["name"],
                r["image"],
                f"{r['branch']} (v{r['branch_version']})",
                ", ".join(f"{p['profile']} v{p['version']} {p['role']}" for p in r["profiles"]),
                ", ".join(r["fleets"]),
                "yes" if r["up_to_date"] else "no",
            ]
            for r in rows
        ],
    )


@mirror_app.command("show")
def mirror_show(
    name: str, server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Show a mirror."""
    with ApiClient(server, token) as c:
        out = c.get(f"/mirrors/{name}")
    show(out, as_json, _mirror_line(out))


@mirror_app.command("release")
def mirror_release(
    name: str,
    version: Annotated[
        str | None, typer.Option(help="Release this version instead of the branch's.")
    ] = None,
    drain: DrainOpt = 12 * 3600.0,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Block until every switch has ended and the old instances have stopped;"
            " exit non-zero if one fails.",
        ),
    ] = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Bind the idle profile to the branch's version, switch the fleets to it (admin)."""
    body: dict[str, Any] = {"drain_s": drain}
    if version is not None:
        body["version"] = version
    with ApiClient(server, token) as c:
        out = c.post(f"/mirrors/{name}/release", json=body)
        if wait:
            out["switches"] = [wait_switch(c, sw) for sw in out["switches"]]
    failed = any(sw["status"] == JobState.FAILED for sw in out["switches"])
    if as_json:
        print_json(out)
    elif out["released_from"] is None:
        _say(f"mirror {name}: the fleets already run version {out['version']} ({out['live']})")
    else:
        _say(
            f"mirror {name}: version {out['version']} on {out['live']} (was {out['released_from']})"
        )
        for sw in out["switches"]:
            _say(switch_line(sw))
    if wait and failed:
        raise typer.Exit(JOB_FAILED)


@profile_app.command("rebind")
def profile_rebind(
    name: str,
    version: Annotated[str, typer.Option(help="Version number, label or 'latest'.")],
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Bind an idle profile (nothing runs or is about to run it) to another version of its
    image (admin)."""
    with ApiClient(server, token) as c:
        out = c.put(f"/profiles/{name}/version", json={"version": version})
    show(out, as_json, f"profile {out['name']}: version {out['version']}")
