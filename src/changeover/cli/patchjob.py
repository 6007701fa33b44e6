"""``changeover patchjob …``: schedule, watch, change and cancel patch jobs (seed 001).

Each command parses its flags (``cli.patchjob_args``: every flag is checked before any
request), makes the API call and prints; the rules live in ``control.patchjobs``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from changeover.cli import patchjob_args as args
from changeover.cli.output import (
    JOB_FAILED,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    console,
    print_json,
    table,
    when,
)
from changeover.client import ApiClient
from changeover.control.patchjobs.states import FINISHED_EVENT, FINISHED_WAIT_S, JobStatus
from changeover.errors import InvalidInput

patchjob_app = typer.Typer(
    help="Patch jobs: move instances from old builds (profiles) to new ones.",
    no_args_is_help=True,
)
FOLLOW_POLL_S = 1.0


def register(app: typer.Typer) -> None:
    from changeover.cli import patchjob_simulate  # noqa: F401  (adds `patchjob simulate`)

    app.add_typer(patchjob_app, name="patchjob")


# -- options shared by create, update and preview --------------------------------------------

FileOpt = Annotated[
    Path | None,
    typer.Option("--file", help="A JSON job spec (the API's body); flags override its fields."),
]
NameOpt = Annotated[str | None, typer.Option("--name", help="The job's name.")]
EnvOpt = Annotated[
    str | None, typer.Option("--environment", "--env", help="Deployment environment.")
]
AppOpt = Annotated[str | None, typer.Option("--application", "--app", help="Application.")]
MethodOpt = Annotated[
    str | None,
    typer.Option("--method", help="Id or name: forced, rolling, ab, bleed-off, canary, custom."),
]
BuildOpt = Annotated[
    list[str] | None,
    typer.Option("--build", help="OLD=NEW profile names, repeatable."),
]
FleetOpt = Annotated[list[str] | None, typer.Option("--fleet", help="Fleet name, repeatable.")]
StopSignalOpt = Annotated[
    str | None,
    typer.Option(
        "--stop-signal", help="SIGTERM … or SIGKILL (hard kill); default: each profile's."
    ),
]
StopTimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--stop-timeout", help="Graceful stop before SIGKILL: 30s, 2m; default: each profile's."
    ),
]
CommentsOpt = Annotated[str | None, typer.Option("--comments", help="Free text.")]
StartOpt = Annotated[
    str | None,
    typer.Option(
        "--start",
        help="Unix time, ISO 8601 (UTC unless given) or +10m; at least 5 min ahead. Default: now.",
    ),
]
RunTimeOpt = Annotated[
    str | None,
    typer.Option("--max-run-time", help="Finalize by force after this long: 90m, 2h, 1d."),
]
EmailOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--email",
        help="ADDR[:progress,result] gets reports (both when no suffix), repeatable. "
        "On update: the new full list.",
    ),
]
DrainDeadlineOpt = Annotated[
    str | None, typer.Option("--drain-deadline", help="Longest drain: 12h (default).")
]
NoticeOpt = Annotated[
    str | None,
    typer.Option("--notice-before", help="Shutdown notices before a drain deadline: 60m,15m,5m."),
]
MaxUnavailableOpt = Annotated[
    str | None, typer.Option("--max-unavailable", help="Rolling: count or share (25%).")
]
MaxSurgeOpt = Annotated[
    str | None, typer.Option("--max-surge", help="Rolling: extra instances, count or share.")
]
MinHealthyOpt = Annotated[
    str | None, typer.Option("--min-healthy-time", help="Ready this long to count: 10s.")
]
CanaryShareOpt = Annotated[
    str | None, typer.Option("--canary-share", help="Canary: share of the selection (10%).")
]
VerifyOpt = Annotated[
    str | None, typer.Option("--verify-command", help="A/B: check to pass before the switch.")
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option("--failure-threshold", help="Share of new instances that may fail (0..1)."),
]
ClientImageOpt = Annotated[
    str | None,
    typer.Option(
        "--client-image",
        help="Release this client image's branch once the servers are done (seed 002).",
    ),
]
ClientBranchOpt = Annotated[
    str | None,
    typer.Option("--client-branch", help="The client branch to move (default: production)."),
]
ClientVersionOpt = Annotated[
    str | None,
    typer.Option("--client-version", help="The client version to release (number or label)."),
]
ClientCompatOpt = Annotated[
    bool | None,
    typer.Option(
        "--client-compat/--no-client-compat",
        help="Give the server builds default client ranges (default: on).",
    ),
]


def _read_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InvalidInput(f"cannot read the job spec {path}: {e}") from e
    if not isinstance(data, dict):
        raise InvalidInput(f"the job spec {path} must be a JSON object")
    return data


def _job_body(
    file: Path | None,
    *,
    require: bool,
    name: str | None = None,
    environment: str | None = None,
    application: str | None = None,
    method: str | None = None,
    build: list[str] | None = None,
    fleet: list[str] | None = None,
    stop_signal: str | None = None,
    stop_timeout: str | None = None,
    comments: str | None = None,
    start: str | None = None,
    max_run_time: str | None = None,
    email: list[str] | None = None,
    drain_deadline: str | None = None,
    notice_before: str | None = None,
    max_unavailable: str | None = None,
    max_surge: str | None = None,
    min_healthy_time: str | None = None,
    canary_share: str | None = None,
    verify_command: str | None = None,
    failure_threshold: float | None = None,
    client_image: str | None = None,
    client_branch: str | None = None,
    client_version: str | None = None,
    client_compat: bool | None = None,
) -> dict[str, Any]:
    """The API body from ``--file`` and the flags; every flag checked here, before any
    request."""
    base = _read_file(file)
    flags: dict[str, Any] = {
        "name": name,
        "environment": environment,
        "application": application,
        "method": None if method is None else args.method(method),
        "builds": None if not build else [args.build_pair(b) for b in build],
        "fleets": args.repeated(fleet),
        "comments": comments,
        "scheduled_start": None if start is None else args.start_time(start, time.time()),
        "emails": None if not email else [args.email_entry(e) for e in email],
        "failure_threshold": failure_threshold,
    }
    if isinstance(base.get("method"), str):
        base["method"] = args.method(base["method"])
    if max_run_time is not None:
        flags["max_run_time"], flags["max_run_time_unit"] = args.run_time(max_run_time)
    body = args.build_body(base, flags, require=require)
    if stop_signal is not None:
        args.merge_knob(body, "stop", "signal", stop_signal.upper())
    if stop_timeout is not None:
        args.merge_knob(body, "stop", "timeout_s", args.duration_s("--stop-timeout", stop_timeout))
    if drain_deadline is not None:
        args.merge_knob(
            body, "drain", "deadline_s", args.duration_s("--drain-deadline", drain_deadline)
        )
    if notice_before is not None:
        notices = [args.duration_s("--notice-before", n) for n in notice_before.split(",")]
        args.merge_knob(body, "drain", "notice_before_s", notices)
    if max_unavailable is not None:
        args.merge_knob(
            body, "rolling", "max_unavailable", args.amount("--max-unavailable", max_unavailable)
        )
    if max_surge is not None:
        args.merge_knob(body, "rolling", "max_surge", args.amount("--max-surge", max_surge))
    if min_healthy_time is not None:
        args.merge_knob(
            body,
            "rolling",
            "min_healthy_time_s",
            args.duration_s("--min-healthy-time", min_healthy_time),
        )
    if canary_share is not None:
        args.merge_knob(body, "canary", "share", args.share("--canary-share", canary_share))
    if verify_command is not None:
        args.merge_knob(body, "ab", "verify_command", verify_command)
    args.merge_client_release(body, client_image, client_branch, client_version, client_compat)
    return body


# -- printing --------------------------------------------------------------------------------


def _say(line: str) -> None:
    console.print(line, highlight=False, soft_wrap=True)


def _job_line(job: dict[str, Any]) -> str:
    line = f"patch job {job['id']} {job['name']!r}: {job['status_name']} ({job['status']})"
    if job.get("phase"):
        line += f", phase {job['phase']}"
    if job.get("reason"):
        line += f" — {job['reason']}"
    return line


def _show_job(job: dict[str, Any]) -> None:
    _say(_job_line(job))
    builds = ", ".join(f"{b['old']} -> {b['new']}" for b in job.get("builds", []))
    facts = [
        ("method", f"{job['method_name']} ({job['method']})"),
        ("environment", job.get("environment")),
        ("application", job.get("application")),
        ("builds", builds),
        ("fleets", ", ".join(str(f) for f in job.get("fleets", []))),
        ("start", when(job.get("start_at"))),
        ("started", when(job.get("started_at"))),
        ("finished", when(job.get("finished_at"))),
        ("waiting for", ", ".join(f"job {j}" for j in job.get("waiting_for") or []) or None),
        ("client release", _release_words(job.get("client_release"))),
        ("comments", job.get("comments") or None),
        (
            "reports",
            ", ".join(
                f"{e['email']} ({'+'.join(k for k in ('progress', 'result') if e[k]) or 'none'})"
                for e in job.get("emails", [])
            )
            or None,
        ),
    ]
    for key, value in facts:
        if value not in (None, "", "-") or key in ("start",):
            _say(f"{key}: {value}")
    progress = job.get("progress") or {}
    by_state = progress.get("by_state") or {}
    states = sorted({*by_state, *(k for r in progress.get("regions", []) for k in r)} - {"region"})
    if not states:
        _say(f"progress: {progress.get('total', 0)} instance(s)")
        return
    rows = [
        [r["region"], sum(r.get(s, 0) for s in states), *(r.get(s, 0) for s in states)]
        for r in progress.get("regions", [])
    ]
    rows.append(["all", progress.get("total", 0), *(by_state.get(s, 0) for s in states)])
    table("progress by region", ["region", "instances", *states], rows)


def _release_words(release: dict[str, Any] | None) -> str | None:
    if not release:
        return None
    state = (
        "released"
        if release["released"]
        else f"once the servers are done (the branch is at {release['branch_version']})"
    )
    ranges = "" if release["compat"] else "; no default client ranges"
    return (
        f"{release['image']}/{release['branch']} -> version {release['version']}"
        f" (client {release['client_version']}), {state}{ranges}"
    )


def _event_line(e: dict[str, Any]) -> str:
    return f"{when(e['at'])}  #{e['id']:<5} {e['kind']:<9} {e['status_name']}: {e['message']}"


def _events(c: ApiClient, job_id: int, after: int) -> Iterator[dict[str, Any]]:
    """Every event after ``after``, page by page."""
    while True:
        page = c.get(f"/patchjobs/{job_id}/events", params={"after": after, "limit": 200})
        events: list[dict[str, Any]] = page["events"]
        yield from events
        if len(events) < 200:
            return
        after = events[-1]["id"]


def _follow(c: ApiClient, job_id: int, after: int, as_json: bool) -> dict[str, Any]:
    """Print events as they come until the job is over; returns the final job."""
    finished_by: float | None = None
    while True:
        for e in _events(c, job_id, after):
            after = e["id"]
            if as_json:
                print(json.dumps(e, sort_keys=True), flush=True)
            else:
                _say(_event_line(e))
            if e["kind"] == FINISHED_EVENT:
                return dict(c.get(f"/patchjobs/{job_id}"))
        job: dict[str, Any] = c.get(f"/patchjobs/{job_id}")
        if JobStatus(job["status"]).terminal:
            # The events were read before the final status: read them again (FINISHED_WAIT_S).
            finished_by = finished_by or time.monotonic() + FINISHED_WAIT_S
            if time.monotonic() > finished_by:
                return job
        time.sleep(FOLLOW_POLL_S)


def _exit_for(job: dict[str, Any]) -> None:
    """Waiting callers (CI) need to know the new build is out: anything but Completed fails."""
    if job["status"] != JobStatus.COMPLETED:
        raise typer.Exit(JOB_FAILED)


# -- commands --------------------------------------------------------------------------------


@patchjob_app.command("create")
def create(
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
    client_image: ClientImageOpt = None,
    client_branch: ClientBranchOpt = None,
    client_version: ClientVersionOpt = None,
    client_compat: ClientCompatOpt = None,
    preview_only: Annotated[
        bool, typer.Option("--preview", help="Print the instances it would move, create nothing.")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Follow its events until it ends; exit 1 unless it completed."),
    ] = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Create a patch job (admin): which instances (fleets x old builds), how, and when."""
    body = _job_body(
        file,
        require=not preview_only,
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
        client_image=client_image,
        client_branch=client_branch,
        client_version=client_version,
        client_compat=client_compat,
    )
    if preview_only:
        _preview(body, server, token, as_json)
        return
    with ApiClient(server, token) as c:
        job = c.post("/patchjobs", json=body)
        if not wait:
            print_json(job) if as_json else _say(_job_line(job) + " — created")
            return
        if not as_json:
            _say(_job_line(job) + " — created; following its events (Ctrl-C stops watching)")
        job = _follow(c, job["id"], 0, as_json=False) if not as_json else _wait_quiet(c, job)
    print_json(job) if as_json else _say(_job_line(job))
    _exit_for(job)


def _wait_quiet(c: ApiClient, job: dict[str, Any]) -> dict[str, Any]:
    while not JobStatus(job["status"]).terminal:
        time.sleep(FOLLOW_POLL_S)
        job = c.get(f"/patchjobs/{job['id']}")
    return job


def _preview(body: dict[str, Any], server: str, token: str, as_json: bool) -> None:
    missing = [
        flag
        for key, flag in (
            ("environment", "--environment"),
            ("application", "--application"),
            ("builds", "--build OLD=NEW"),
            ("fleets", "--fleet"),
        )
        if not body.get(key)
    ]
    if missing:
        raise InvalidInput(f"a preview needs {', '.join(missing)}")
    query = {k: body[k] for k in ("environment", "application", "builds", "fleets")}
    with ApiClient(server, token) as c:
        out = c.post("/patchjobs/preview", json=query)
    if as_json:
        print_json(out)
        return
    _say(f"{out['total']} instance(s) would be moved")
    table(
        "per region",
        ["region", "instances"],
        [[r["region"], r["instances"]] for r in out["regions"]],
    )
    table(
        "per fleet", ["fleet", "instances"], [[f["fleet"], f["instances"]] for f in out["fleets"]]
    )
    if out.get("truncated"):
        _say("(instance list truncated; use --json for the first ones)")


@patchjob_app.command("preview")
def preview(
    file: FileOpt = None,
    environment: EnvOpt = None,
    application: AppOpt = None,
    build: BuildOpt = None,
    fleet: FleetOpt = None,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """How many instances a job would move, per region and fleet (nothing is created)."""
    body = _job_body(
        file,
        require=False,
        environment=environment,
        application=application,
        build=build,
        fleet=fleet,
    )
    _preview(body, server, token, as_json)


@patchjob_app.command("show")
def show(
    job_id: int,
    instances: Annotated[
        bool, typer.Option("--instances", help="Also list each instance: old, new, players.")
    ] = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """A job: status, phase, reason, and progress per state and region."""
    with ApiClient(server, token) as c:
        job = c.get(f"/patchjobs/{job_id}")
        members = _instances(c, job_id) if instances else None
    if as_json:
        print_json(job if members is None else {**job, "instances": members})
        return
    _show_job(job)
    if members is not None:
        _show_instances(members)


def _instances(c: ApiClient, job_id: int) -> list[dict[str, Any]]:
    """Every instance of the job, page by page."""
    out: list[dict[str, Any]] = []
    while True:
        page = c.get(f"/patchjobs/{job_id}/instances", params={"limit": 100, "offset": len(out)})
        out.extend(page["instances"])
        if not page["instances"] or len(out) >= page["total"]:
            return out


def _member(m: dict[str, Any] | None) -> str:
    if m is None:
        return "-"
    return f"#{m['id']} {m['state']} ({m['players']} players)"


def _show_instances(members: list[dict[str, Any]]) -> None:
    rows = [
        [
            m["instance_id"],
            m["fleet"] or "-",
            m["region"],
            m["host"],
            m["state"] or "-",
            _member(m["old"]),
            _member(m["new"]),
        ]
        for m in members
    ]
    table("instances", ["instance", "fleet", "region", "host", "state", "old", "new"], rows)


@patchjob_app.command("list")
def list_jobs(
    status: Annotated[
        str | None, typer.Option("--status", help="Only jobs in this status (id or name).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Patch jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if status is not None:
        params["status"] = _status_id(status)
    with ApiClient(server, token) as c:
        out = c.get("/patchjobs", params=params)
    if as_json:
        print_json(out)
        return
    rows = []
    for j in out["jobs"]:
        p = j.get("progress") or {}
        done = (p.get("by_state") or {}).get("new", 0)
        rows.append(
            [
                j["id"],
                j["name"],
                j["application"],
                j["method_name"],
                j["status_name"],
                j.get("phase"),
                when(j.get("start_at")),
                f"{done}/{p.get('total', 0)}",
            ]
        )
    table(
        f"patch jobs ({out['total']} in all)",
        ["id", "name", "application", "method", "status", "phase", "start", "new/total"],
        rows,
    )


def _status_id(value: str) -> int:
    if value.isdigit():
        return int(value)
    by_name = {s.label.lower(): int(s) for s in JobStatus} | {
        s.name.lower(): int(s) for s in JobStatus
    }
    found = by_name.get(value.strip().lower().replace("-", "_")) or by_name.get(
        value.strip().lower()
    )
    if found is None:
        names = ", ".join(s.label for s in JobStatus)
        raise InvalidInput(f"--status {value!r}: choose an id or one of {names}")
    return found


@patchjob_app.command("update")
def update(
    job_id: int,
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
    client_image: ClientImageOpt = None,
    client_branch: ClientBranchOpt = None,
    client_version: ClientVersionOpt = None,
    client_compat: ClientCompatOpt = None,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Change a job (admin). Until 5 minutes before its start anything; after, only --email."""
    body = _job_body(
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
        client_image=client_image,
        client_branch=client_branch,
        client_version=client_version,
        client_compat=client_compat,
    )
    if not body:
        raise InvalidInput("nothing to change: give at least one flag (or --file)")
    with ApiClient(server, token) as c:
        job = c.request("PATCH", f"/patchjobs/{job_id}", json=body)
    print_json(job) if as_json else _say(_job_line(job) + " — updated")


@patchjob_app.command("cancel")
def cancel(
    job_id: int,
    revert: Annotated[
        bool, typer.Option("--revert", help="Go back to the old builds where it changed them.")
    ] = False,
    wrap_up: Annotated[
        bool, typer.Option("--wrap-up", help="Stop the job, leave every instance as it is.")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="Wait until the job has ended (a revert may take minutes) and print how.",
        ),
    ] = True,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Cancel a job (admin); one that has not started simply never runs.

    The job stops at its next step, so the answer to the request still shows it running;
    this prints how it ended (Cancelled, Rolled back …), or with --no-wait what it is doing.
    """
    if revert == wrap_up:
        raise InvalidInput("say how to cancel: --revert or --wrap-up (one of them)")
    mode = "revert" if revert else "wrap_up"
    with ApiClient(server, token) as c:
        job = c.post(f"/patchjobs/{job_id}/cancel", json={"mode": mode})
        if wait:
            job = _wait_quiet(c, job)
    if as_json:
        print_json(job)
    elif JobStatus(job["status"]).terminal:
        _say(_job_line(job))
    else:
        _say(
            f"{_job_line(job)} — cancel ({mode}) asked; it stops at its next step"
            f" (`changeover patchjob events {job_id} --follow` shows how it ends)"
        )


@patchjob_app.command("resume")
def resume(
    job_id: int, server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Resume a paused job (admin): a canary waiting for promotion, a custom pause step."""
    with ApiClient(server, token) as c:
        job = c.post(f"/patchjobs/{job_id}/resume")
    print_json(job) if as_json else _say(_job_line(job))


@patchjob_app.command("events")
def events(
    job_id: int,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until the job ends.")
    ] = False,
    after: Annotated[int, typer.Option(help="Only events after this event id.", min=0)] = 0,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """What happened to a job, oldest first (with --follow and --json: one object a line)."""
    with ApiClient(server, token) as c:
        if follow:
            job = _follow(c, job_id, after, as_json)
            if not as_json:
                _say(_job_line(job))
            _exit_for(job)
            return
        rows = list(_events(c, job_id, after))
    if as_json:
        print_json(rows)
        return
    for e in rows:
        _say(_event_line(e))


@patchjob_app.command("methods")
def methods(server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """The patching methods (id and name)."""
    with ApiClient(server, token) as c:
        rows = c.get("/patchjobs/methods")
    print_json(rows) if as_json else table(
        "methods", ["id", "name"], [[r["id"], r["name"]] for r in rows]
    )


@patchjob_app.command("statuses")
def statuses(server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """The statuses a job goes through (id and name)."""
    with ApiClient(server, token) as c:
        rows = c.get("/patchjobs/statuses")
    print_json(rows) if as_json else table(
        "statuses", ["id", "name"], [[r["id"], r["name"]] for r in rows]
    )
