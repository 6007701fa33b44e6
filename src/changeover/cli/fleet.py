"""``changeover env|region|app|profile|compat|fleet|host|allocate|session …``: the fleet API.

Each command parses its arguments, makes one API call and prints; the rules live in
``control.fleet``.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from changeover.cli import durations
from changeover.cli.output import (
    JOB_FAILED,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    console,
    err_console,
    print_json,
    table,
    when,
)
from changeover.client import ApiClient
from changeover.control.states import JobState
from changeover.errors import InvalidInput
from changeover.times import utc

env_app = typer.Typer(help="Deployment environments (production, staging …).", no_args_is_help=True)
region_app = typer.Typer(help="Regions hosts live in.", no_args_is_help=True)
app_app = typer.Typer(help="Applications (type game or utility).", no_args_is_help=True)
profile_app = typer.Typer(help="Profiles: how to run an image version.", no_args_is_help=True)
compat_app = typer.Typer(help="Client versions an image version accepts.", no_args_is_help=True)
fleet_app = typer.Typer(help="Fleets: hosts running one application.", no_args_is_help=True)
host_app = typer.Typer(help="Hosts (machines running the agent).", no_args_is_help=True)
session_app = typer.Typer(help="Sessions made by allocations.", no_args_is_help=True)


DrainOpt = Annotated[
    float,
    typer.Option(
        help="How long an instance with players may drain: 30m, 12h.",
        parser=durations.parser("--drain"),
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(env_app, name="env")
    app.add_typer(region_app, name="region")
    app.add_typer(app_app, name="app")
    app.add_typer(profile_app, name="profile")
    app.add_typer(compat_app, name="compat")
    app.add_typer(fleet_app, name="fleet")
    app.add_typer(host_app, name="host")
    app.add_typer(session_app, name="session")
    app.command("allocate")(allocate)


def show(out: Any, as_json: bool, line: str) -> None:
    print_json(out) if as_json else console.print(line, highlight=False, soft_wrap=True)


# -- environments, regions, applications ---------------------------------------------------


@env_app.command("create")
def env_create(
    name: str, server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Create an environment (admin)."""
    with ApiClient(server, token) as c:
        out = c.post("/environments", json={"name": name})
    show(out, as_json, f"environment {out['name']} created")


@env_app.command("list")
def env_list(server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """List environments."""
    with ApiClient(server, token) as c:
        rows = c.get("/environments")
    if as_json:
        print_json(rows)
    else:
        table(
            "environments", ["name", "created"], [[r["name"], when(r["created_at"])] for r in rows]
        )


@region_app.command("create")
def region_create(
    name: str, server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Create a region (admin)."""
    with ApiClient(server, token) as c:
        out = c.post("/regions", json={"name": name})
    show(out, as_json, f"region {out['name']} created")


@region_app.command("list")
def region_list(server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """List regions."""
    with ApiClient(server, token) as c:
        rows = c.get("/regions")
    if as_json:
        print_json(rows)
    else:
        table("regions", ["name", "created"], [[r["name"], when(r["created_at"])] for r in rows])


@app_app.command("create")
def app_create(
    name: str,
    app_type: Annotated[str | None, typer.Option("--type", help="game or utility.")] = None,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Create an application (admin)."""
    with ApiClient(server, token) as c:
        out = c.post("/applications", json={"name": name, "type": app_type})
    show(out, as_json, f"application {out['name']} created (type {out['type'] or 'unset'})")


@app_app.command("set-type")
def app_set_type(
    name: str,
    app_type: Annotated[str, typer.Argument(help="game or utility.")],
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Set an application's type; it is fixed once set."""
    with ApiClient(server, token) as c:
        out = c.request("PATCH", f"/applications/{name}", json={"type": app_type})
    show(out, as_json, f"application {out['name']} is of type {out['type']}")


@app_app.command("list")
def app_list(server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """List applications."""
    with ApiClient(server, token) as c:
        rows = c.get("/applications")
    if as_json:
        print_json(rows)
    else:
        table("applications", ["name", "type"], [[r["name"], r["type"]] for r in rows])


# -- profiles and compatibility ------------------------------------------------------------


def _health(value: str) -> dict[str, Any]:
    kind, _, arg = value.partition(":")
    if kind == "http":
        return {"type": "http", "path": arg or "/"}
    if kind == "command":
        return {"type": "command", "command": shlex.split(arg)}
    if arg:
        raise InvalidInput(f"--health {value!r}: only http:PATH and command:CMD take an argument")
    return {"type": kind}


def _port(value: str) -> dict[str, Any]:
    parts = value.split(":")
    if not 1 <= len(parts) <= 3:
        raise InvalidInput(f"--port {value!r} must read NAME[:tcp|udp[:FIXED]]")
    out: dict[str, Any] = {"name": parts[0], "protocol": parts[1] if len(parts) > 1 else "tcp"}
    if len(parts) == 3:
        if not parts[2].isdigit():
            raise InvalidInput(f"--port {value!r}: the fixed port must be a number")
        out["port"] = int(parts[2])
    return out


def _env(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep:
            raise InvalidInput(f"--env {v!r} must read NAME=VALUE")
        out[key] = val
    return out


@profile_app.command("create")
def profile_create(
    name: str,
    application: Annotated[str, typer.Option("--app", help="Application name.")],
    image: Annotated[str, typer.Option(help="Image name.")],
    version: Annotated[str, typer.Option(help="Version number, label or 'latest'.")] = "latest",
    command: Annotated[
        str | None,
        typer.Option(help="Command line, e.g. 'bin/server --port {port}' ({version_dir} too)."),
    ] = None,
    port: Annotated[
        list[str] | None, typer.Option("--port", help="NAME[:tcp|udp[:FIXED]], repeatable.")
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="NAME=VALUE, repeatable.")] = None,
    health: Annotated[
        str, typer.Option(help="sdk, tcp, udp, none, http:/PATH or command:CMD.")
    ] = "sdk",
    stop_signal: Annotated[str, typer.Option(help="Graceful stop signal.")] = "SIGTERM",
    stop_timeout: Annotated[
        float,
        typer.Option(
            help="Graceful stop before SIGKILL: 30, 30s, 5m.",
            parser=durations.parser("--stop-timeout"),
        ),
    ] = 30.0,
    capacity: Annotated[int, typer.Option(help="Players per instance.")] = 1,
    spec: Annotated[
        Path | None, typer.Option(help="A JSON file with the whole run spec instead.")
    ] = None,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Create a profile: an image version and how to run it (admin)."""
    body: dict[str, Any] = {"name": name, "application": application, "image": image}
    body["version"] = version
    if spec is not None:
        try:
            body.update(json.loads(spec.read_text()))
        except (OSError, ValueError) as e:
            raise InvalidInput(f"cannot read the spec {spec}: {e}") from e
    else:
        if not command:
            raise InvalidInput("give --command (or --spec FILE)")
        body.update(
            command=shlex.split(command),
            ports=[_port(p) for p in port or ["game"]],
            env=_env(env or []),
            health=_health(health),
            stop_signal=stop_signal,
            stop_timeout_s=stop_timeout,
            capacity=capacity,
        )
    with ApiClient(server, token) as c:
        out = c.post("/profiles", json=body)
    show(out, as_json, f"profile {out['name']}: version {out['version']} of {image}")


@profile_app.command("list")
def profile_list(
    application: Annotated[str | None, typer.Option("--app")] = None,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """List profiles."""
    with ApiClient(server, token) as c:
        rows = c.get("/profiles", params={"application": application} if application else None)
    if as_json:
        print_json(rows)
        return
    table(
        "profiles",
        ["name", "application", "version", "command", "capacity"],
        [
            [r["name"], r["application"], r["version"], shlex.join(r["command"]), r["capacity"]]
            for r in rows
        ],
    )


@profile_app.command("show")
def profile_show(
    name: str, server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Show a profile."""
    with ApiClient(server, token) as c:
        out = c.get(f"/profiles/{name}")
    if as_json:
        print_json(out)
        return
    # For people: times as dates (the JSON keeps epoch seconds, for programs).
    shown = {k: when(v) if k.endswith("_at") and v is not None else v for k, v in out.items()}
    console.print_json(data=shown)


@compat_app.command("set")
def compat_set(
    image: Annotated[str, typer.Option(help="Image name.")],
    version: Annotated[str, typer.Option(help="Version number or label.")],
    client_min: Annotated[str | None, typer.Option(help="Oldest client accepted.")] = None,
    client_max: Annotated[str | None, typer.Option(help="Newest client accepted.")] = None,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Declare which client versions a server version accepts (admin)."""
    with ApiClient(server, token) as c:
        out = c.put(
            f"/images/{image}/versions/{version}/compat",
            json={"client_min": client_min, "client_max": client_max},
        )
    lo, hi = out["client_min"] or "any", out["client_max"] or "any"
    show(out, as_json, f"{image} version {out['version']} accepts clients {lo} to {hi}")


# -- fleets --------------------------------------------------------------------------------

HostOpt = Annotated[list[str] | None, typer.Option("--host", help="Host name, repeatable.")]


@fleet_app.command("create")
def fleet_create(
    name: str,
    application: Annotated[str, typer.Option("--app", help="Application name.")],
    environment: Annotated[str, typer.Option("--env", help="Environment name.")],
    host: HostOpt = None,
    per_host: Annotated[int, typer.Option(help="Instances on each host.")] = 1,
    profile: Annotated[str | None, typer.Option(help="Active profile.")] = None,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Create a fleet (admin)."""
    body = {
        "name": name,
        "application": application,
        "environment": environment,
        "hosts": host or [],
        "instances_per_host": per_host,
        "profile": profile,
    }
    with ApiClient(server, token) as c:
        out = c.post("/fleets", json=body)
    show(out, as_json, f"fleet {out['name']} created on {len(out['hosts'])} host(s)")


@fleet_app.command("update")
def fleet_update(
    name: str,
    host: HostOpt = None,
    per_host: Annotated[int | None, typer.Option(help="Instances on each host.")] = None,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Change a fleet's hosts (the full list) or its size."""
    body: dict[str, Any] = {"hosts": host, "instances_per_host": per_host}
    with ApiClient(server, token) as c:
        out = c.request("PATCH", f"/fleets/{name}", json=body)
    show(out, as_json, f"fleet {out['name']} updated")


@fleet_app.command("list")
def fleet_list(server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """List fleets."""
    with ApiClient(server, token) as c:
        rows = c.get("/fleets")
    if as_json:
        print_json(rows)
        return
    table(
        "fleets",
        ["name", "application", "environment", "profile", "hosts", "per host", "instances"],
        [
            [
                r["name"],
                r["application"],
                r["environment"],
                r["profile"],
                ", ".join(r["hosts"]),
                r["instances_per_host"],
                sum(r["instances"].values()),
            ]
            for r in rows
        ],
    )


def _instances_table(rows: list[dict[str, Any]]) -> None:
    table(
        "instances",
        ["id", "host", "port", "profile", "version", "state", "players", "restarts", "error"],
        [
            [
                r["id"],
                r["host"] + ("" if r["host_alive"] else " (lost)"),
                r["port"],
                r["profile"],
                r["version"],
                r["state"],
                f"{r['players']}/{r['capacity']}",
                r["restarts"],
                (r["error"] or "")[:60],
            ]
            for r in rows
        ],
    )


@fleet_app.command("show")
def fleet_show(
    name: str, server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Show a fleet and its instances."""
    with ApiClient(server, token) as c:
        out = c.get(f"/fleets/{name}")
        rows = c.get(f"/fleets/{name}/instances")
    if as_json:
        print_json({**out, "instance_list": rows})
        return
    for k in ("name", "application", "environment", "profile", "instances_per_host"):
        console.print(f"{k}: {out[k]}", highlight=False)
    console.print(f"hosts: {', '.join(out['hosts']) or '-'}", highlight=False)
    _instances_table(rows)


@fleet_app.command("instances")
def fleet_instances(
    name: str,
    all_: Annotated[bool, typer.Option("--all", help="Include stopped instances.")] = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """List a fleet's instances."""
    with ApiClient(server, token) as c:
        rows = c.get(f"/fleets/{name}/instances", params={"all": all_})
    print_json(rows) if as_json else _instances_table(rows)


def settling(fleet: dict[str, Any], rows: list[dict[str, Any]]) -> str | None:
    """What the fleet still waits for, or None once it runs exactly what it wants: each
    host's instances of the active profile ready, and no other instance left running. A
    build machine trial's instance is not the fleet's (it takes no players and ends with
    its trial): it is not waited for."""
    rows = [r for r in rows if r.get("trial_id") is None]
    wanted = len(fleet["hosts"]) * fleet["instances_per_host"]
    current = [r for r in rows if r["desired"] == "running" and r["profile"] == fleet["profile"]]
    ready = [r for r in current if r["state"] in ("ready", "allocated")]
    leaving = [r for r in rows if r not in current]
    if len(ready) == wanted == len(current) and not leaving:
        return None
    waits = [f"{len(ready)} of {wanted} instance(s) of {fleet['profile']} ready"]
    if leaving:
        players = sum(r["players"] for r in leaving)
        on_them = f" ({players} player(s) on them)" if players else ""
        waits.append(f"{len(leaving)} other(s) to stop{on_them}")
    return "; ".join(waits)


@fleet_app.command("wait")
def fleet_wait(
    name: str,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 300.0,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Block until the fleet runs what it wants: its instances ready on every host (after a
    create, an update or a switch), and the old ones stopped; then list them. Exit 1 on
    timeout, saying what it still waited for."""
    deadline = time.monotonic() + timeout
    said = None
    with ApiClient(server, token) as c:
        while True:
            fleet = c.get(f"/fleets/{name}")
            rows = c.get(f"/fleets/{name}/instances")
            waiting = settling(fleet, rows)
            if waiting is None:
                break
            if time.monotonic() > deadline:
                err_console.print(
                    f"error: fleet {name} did not settle in {timeout:g} s: {waiting}",
                    highlight=False,
                    soft_wrap=True,
                )
                raise typer.Exit(JOB_FAILED)
            if waiting != said and not as_json:
                console.print(f"waiting: {waiting}", highlight=False, soft_wrap=True)
                said = waiting
            time.sleep(0.5)
    print_json(rows) if as_json else _instances_table(rows)


def switch_line(sw: dict[str, Any]) -> str:
    line = (
        f"switch {sw['id']} of {sw['fleet']} to {sw['to_profile']}: {sw['status_name']}"
        f" ({sw['status']}), {sw['moved']}/{sw['total']} moved — {sw['error'] or sw['message']}"
    )
    return line + _retiring_note(sw)


def _retiring_note(sw: dict[str, Any]) -> str:
    out = sw.get("retiring") or {}
    if not out.get("instances"):
        return ""
    note = f"; {out['instances']} old instance(s) still running"
    if out["players"]:
        note += f" with {out['players']} player(s), until they leave"
    if out["deadline"] is not None:
        note += f" (stopped by {utc(out['deadline'])} at the latest)"
    return note


def wait_switch(c: ApiClient, sw: dict[str, Any]) -> dict[str, Any]:
    """Wait until the switch has ended and, if it completed, until the old instances it
    drained have stopped too: until then old players still play the old version."""
    sw = c.wait_job(f"/switches/{sw['id']}", poll_s=0.5)
    if sw["status"] != JobState.COMPLETED or not sw["retiring"]["instances"]:
        return sw
    console.print(f"{switch_line(sw)}: waiting for them to stop", highlight=False, soft_wrap=True)
    while sw["retiring"]["instances"]:
        time.sleep(0.5)
        sw = c.get(f"/switches/{sw['id']}")
    return sw


@fleet_app.command("switch")
def fleet_switch(
    name: str,
    profile: Annotated[str, typer.Option(help="The profile to make active.")],
    drain: DrainOpt = 12 * 3600.0,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Block until every old instance has stopped (those with players drain"
            " first); exit non-zero if the switch fails.",
        ),
    ] = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Fleet Profile Switch: make a profile active and move the instances to it (admin)."""
    with ApiClient(server, token) as c:
        out = c.post(f"/fleets/{name}/switch", json={"profile": profile, "drain_s": drain})
        if wait:
            out = wait_switch(c, out)
    show(out, as_json, switch_line(out))
    if wait and out["status"] == 6:
        raise typer.Exit(JOB_FAILED)


@fleet_app.command("switch-status")
def fleet_switch_status(
    name: str, server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Fleet Profile Switch Status: the fleet's latest switch."""
    with ApiClient(server, token) as c:
        out = c.get(f"/fleets/{name}/switch")
    show(out, as_json, switch_line(out))


@host_app.command("list")
def host_list(server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """List hosts and whether their agent is alive."""
    with ApiClient(server, token) as c:
        rows = c.get("/hosts")
    if as_json:
        print_json(rows)
        return
    table(
        "hosts",
        ["name", "region", "address", "slots", "alive", "last seen"],
        [
            [r["name"], r["region"], r["address"], r["slots"], r["alive"], when(r["last_seen_at"])]
            for r in rows
        ],
    )


# -- allocation ----------------------------------------------------------------------------


def allocate(
    player: Annotated[list[str], typer.Option("--player", help="Player id, repeatable (party).")],
    fleet: Annotated[str | None, typer.Option(help="Fleet to allocate from.")] = None,
    profile: Annotated[str | None, typer.Option(help="Or: profile to allocate from.")] = None,
    region: Annotated[
        list[str] | None, typer.Option("--region", help="Preferred region, best first.")
    ] = None,
    client_version: Annotated[str | None, typer.Option(help="The client's version.")] = None,
    party: Annotated[str | None, typer.Option(help="Party id.")] = None,
    join: Annotated[str | None, typer.Option(help="A friend's session id to join.")] = None,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Server Allocate: where does this player (or party) play?"""
    body = {
        "fleet": fleet,
        "profile": profile,
        "players": player,
        "regions": region or [],
        "client_version": client_version,
        "party": party,
        "join_session": join,
    }
    with ApiClient(server, token) as c:
        out = c.post("/allocations", json=body)
    show(
        out,
        as_json,
        f"session {out['session_id']}: {out['address']}:{out['port']}"
        f" (host {out['host']}, instance {out['instance_id']}, version {out['version']})",
    )


@session_app.command("show")
def session_show(
    session_id: str, server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Show a session."""
    with ApiClient(server, token) as c:
        out = c.get(f"/sessions/{session_id}")
    show(out, as_json, f"session {out['session_id']}: {out['status']} on {out['instance_id']}")


@session_app.command("end")
def session_end(
    session_id: str, server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """End a session (its players left) and give its places back."""
    with ApiClient(server, token) as c:
        out = c.delete(f"/sessions/{session_id}")
    show(out, as_json, f"session {out['session_id']}: {out['status']}")
