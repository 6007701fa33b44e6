"""``changeover patchjob simulate``: what a job would cost players, before it runs.

It takes the job exactly as ``create`` does (the same flags, ``--file``), plus an optional
player model; the control plane simulates it on the live fleet and creates nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from changeover.cli import patchjob_args as args
from changeover.cli.durations import seconds
from changeover.cli.output import JsonOpt, ServerOpt, TokenOpt, console, print_json, table
from changeover.cli.patchjob import (
    AppOpt,
    BuildOpt,
    CanaryShareOpt,
    CommentsOpt,
    DrainDeadlineOpt,
    EmailOpt,
    EnvOpt,
    FileOpt,
    FleetOpt,
    MaxSurgeOpt,
    MaxUnavailableOpt,
    MethodOpt,
    MinHealthyOpt,
    NameOpt,
    NoticeOpt,
    RunTimeOpt,
    StartOpt,
    StopSignalOpt,
    StopTimeoutOpt,
    ThresholdOpt,
    VerifyOpt,
    _job_body,
    patchjob_app,
)
from changeover.client import ApiClient
from changeover.errors import InvalidInput

ArrivalsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--arrivals",
        help="New players per second; repeat for a curve over the UTC day (24 = hourly). "
        "Without it the model is fitted from the fleet's last 7 days of sessions.",
    ),
]
SessionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--session",
        help="SHARE:LENGTH[:SPREAD] of session lengths, e.g. 0.8:15m:0.5 (log-normal spread); "
        "repeatable, shares add up to 1.",
    ),
]


def _session(value: str) -> dict[str, float]:
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise InvalidInput(f"--session {value!r}: give SHARE:LENGTH[:SPREAD], e.g. 0.8:15m:0.5")
    out = {"share": args.share("--session", parts[0]), "median_s": seconds("--session", parts[1])}
    if len(parts) == 3:
        out["sigma"] = _number("--session", parts[2])
    return out


def _number(flag: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(f"{flag} {value!r}: give a number", field=flag) from None


def _players(
    arrivals: list[str] | None,
    session: list[str] | None,
    friend_joins: float | None,
    notice_leaves: float | None,
) -> dict[str, Any] | None:
    """The explicit player model from the flags, or None (fit it from the history)."""
    if not arrivals and not session:
        if friend_joins is not None or notice_leaves is not None:
            raise InvalidInput("--friend-joins and --notice-leaves need --arrivals and --session")
        return None
    if not arrivals or not session:
        raise InvalidInput("an explicit player model needs both --arrivals and --session")
    return {
        "arrivals_per_s": [_number("--arrivals", a) for a in arrivals],
        "sessions": [_session(s) for s in session],
        "friend_join_share": friend_joins or 0.0,
        "notice_leave_share": notice_leaves or 0.0,
    }


def _duration(s: float | None) -> str:
    if s is None:
        return "not finished"
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


@patchjob_app.command("simulate")
def simulate(
    file: FileOpt = None,
    name: NameOpt = None,
    environment: EnvOpt = None,
    application: AppOpt = None,
    method: MethodOpt = None,
    build: BuildOpt = None,
    fleet: FleetOpt = None,
    stop_signal: StopSignalOpt = None,
    stop_timeout: StopTimeoutOpt = None,
    comments: CommentsOpt = None,
    start: StartOpt = None,
    max_run_time: RunTimeOpt = None,
    email: EmailOpt = None,
    drain_deadline: DrainDeadlineOpt = None,
    notice_before: NoticeOpt = None,
    max_unavailable: MaxUnavailableOpt = None,
    max_surge: MaxSurgeOpt = None,
    min_healthy_time: MinHealthyOpt = None,
    canary_share: CanaryShareOpt = None,
    verify_command: VerifyOpt = None,
    failure_threshold: ThresholdOpt = None,
    arrivals: ArrivalsOpt = None,
    session: SessionOpt = None,
    friend_joins: Annotated[
        float | None, typer.Option("--friend-joins", help="Share of arrivals joining a friend.")
    ] = None,
    notice_leaves: Annotated[
        float | None,
        typer.Option("--notice-leaves", help="Share of players leaving at a shutdown notice."),
    ] = None,
    runs: Annotated[int, typer.Option(help="Simulations (seeds) for the p50/p90.")] = 5,
    seed: Annotated[int, typer.Option(help="The first seed: same inputs, same answer.")] = 0,
    compare: Annotated[
        bool, typer.Option("--compare", help="Also every method on the same fleet.")
    ] = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """What a job would cost players (duration, moved, kicked, surge), simulated on the
    live fleet from now on (whatever --start says); nothing is created."""
    job = _job_body(
        file,
        require=False,
        name=name,
        environment=environment,
        application=application,
        method=method,
        build=build,
        fleet=fleet,
        stop_signal=stop_signal,
        stop_timeout=stop_timeout,
        comments=comments,
        start=start,
        max_run_time=max_run_time,
        email=email,
        drain_deadline=drain_deadline,
        notice_before=notice_before,
        max_unavailable=max_unavailable,
        max_surge=max_surge,
        min_healthy_time=min_healthy_time,
        canary_share=canary_share,
        verify_command=verify_command,
        failure_threshold=failure_threshold,
    )
    job.setdefault("name", "simulation")
    body: dict[str, Any] = {"job": job, "runs": runs, "seed": seed, "compare": compare}
    players = _players(arrivals, session, friend_joins, notice_leaves)
    if players is not None:
        body["players"] = players
    with ApiClient(server, token) as c:
        out = c.post("/patchjobs/simulate", json=body)
    print_json(out) if as_json else _show(out)


def _show(out: dict[str, Any]) -> None:
    say = console.print
    est, first = out["estimate"], out["estimate"]["first"]
    say(
        f"{first['method_name']} of {first['selected']} instance(s), {out['fleet']['players']} "
        f"player(s) online; {out['model']['note']}"
    )
    if first["starts_after_s"]:
        say(f"starts in {_duration(first['starts_after_s'])} (its scheduled start)")
    say(
        f"duration: p50 {_duration(est['duration_p50_s'])}, p90 {_duration(est['duration_p90_s'])}"
        f" over {est['runs']} run(s)"
        + (f", {est['unfinished']} unfinished" if est["unfinished"] else "")
    )
    say(f"players kicked: p50 {est['kicked_p50']:g}, p90 {est['kicked_p90']:g}")
    _results(f"first run (seed {out['seed']})", [first])
    if out["methods"]:
        _results("every method, same fleet and seed", out["methods"])


def _results(title: str, results: list[dict[str, Any]]) -> None:
    rows = [
        [
            r["method_name"],
            r["outcome_name"] or "not finished",
            _duration(r["duration_s"]),
            r["moved_after_notice"],
            r["kicked_at_deadline"] + r["kicked_by_stop"],
            r["peak_extra_instances"],
            _duration(r["reduced_capacity_s"]) if r["reduced_capacity_s"] else "-",
        ]
        for r in results
    ]
    table(
        title,
        ["method", "outcome", "duration", "moved", "kicked", "surge", "reduced capacity"],
        rows,
    )
