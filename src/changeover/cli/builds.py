"""``changeover image|push|update|diff|version|branch …``: the builds flow of seed 000."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from changeover.cli.output import (
    JOB_FAILED,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    WaitOpt,
    console,
    err_console,
    finish_job,
    human_bytes,
    job_line,
    print_json,
    table,
    when,
)
from changeover.client import ApiClient
from changeover.control.states import JobState
from changeover.push import push

image_app = typer.Typer(help="Images: lines of builds of one application.", no_args_is_help=True)
update_app = typer.Typer(help="Updates: uploaded candidate builds.", no_args_is_help=True)
diff_app = typer.Typer(help="Diff analyses: what an update changes.", no_args_is_help=True)
version_app = typer.Typer(help="Image versions: accepted, immutable builds.", no_args_is_help=True)
branch_app = typer.Typer(help="Branches: named pointers to versions.", no_args_is_help=True)

ImageOpt = Annotated[str, typer.Option("--image", help="Image name.")]


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")
    app.command("push")(push_cmd)
    app.add_typer(update_app, name="update")
    app.add_typer(diff_app, name="diff")
    app.add_typer(version_app, name="version")
    app.add_typer(branch_app, name="branch")


# -- images --------------------------------------------------------------------------------


@image_app.command("create")
def image_create(
    name: str,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Create an image (admin)."""
    with ApiClient(server, token) as c:
        out = c.post("/images", json={"name": name, "description": description})
    print_json(out) if as_json else console.print(f"image {out['name']} created")


@image_app.command("list")
def image_list(server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """List images."""
    with ApiClient(server, token) as c:
        rows = c.get("/images")
    if as_json:
        print_json(rows)
        return
    table(
        "images",
        ["name", "current version", "locked by diff", "created"],
        [
            [r["name"], r["current_version"], r["locked_by_diff"], when(r["created_at"])]
            for r in rows
        ],
    )


@image_app.command("show")
def image_show(
    name: str, server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Show an image."""
    with ApiClient(server, token) as c:
        out = c.get(f"/images/{name}")
    if as_json:
        print_json(out)
        return
    for k in ("name", "description", "current_version", "locked_by_diff"):
        console.print(f"{k}: {out[k]}", highlight=False)


# -- push and updates ----------------------------------------------------------------------


def push_cmd(
    directory: Annotated[Path, typer.Argument(help="The build directory.")],
    image: ImageOpt,
    label: Annotated[str | None, typer.Option(help="A unique label, e.g. 1.4.2.")] = None,
    user_data: Annotated[
        list[str] | None,
        typer.Option(
            "--user-data",
            metavar="PATTERN",
            help="A path of the install that is the player's (saves, settings, logs), e.g."
            " saves or '**/*.log': the launcher never deletes or overwrites it. Repeatable.",
        ),
    ] = None,
    wait: WaitOpt = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Upload a build as an update of IMAGE, sending only what the server lacks."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with (
        ApiClient(server, token) as c,
        Progress(*columns, console=err_console, transient=True) as bar,
    ):
        hashing = bar.add_task("hashing", total=None)
        uploading: list[Any] = []

        def on_plan(files: int, total: int) -> None:
            bar.update(hashing, visible=False)
            uploading.append(bar.add_task(f"uploading {files} file(s)", total=total))

        result = push(
            c,
            directory,
            image,
            label,
            on_scan=lambda n: bar.advance(hashing, n),
            on_plan=on_plan,
            on_upload=lambda n: bar.advance(uploading[0], n),
            user_data=user_data or (),
        )
        job = result.update
        if not as_json:
            m = result.manifest
            console.print(
                f"update {job['id']}: {len(m)} files, {human_bytes(m.total_bytes)};"
                f" uploaded {result.uploaded_files} file(s), {human_bytes(result.uploaded_bytes)}",
                highlight=False,
            )
        if wait:
            job = c.wait_job(f"/updates/{job['id']}")
    if wait:
        finish_job("update", job, as_json)
    elif as_json:
        print_json(job)
    else:
        job_line("update", job)


@update_app.command("show")
def update_show(
    update_id: int, server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Show an update's job state (Image Update Status)."""
    with ApiClient(server, token) as c:
        job = c.get(f"/updates/{update_id}")
    if as_json:
        print_json(job)
        return
    job_line("update", job)
    trial = job.get("trial")
    if trial is not None:
        verdict = f"{trial['result']}: " if trial["result"] else ""
        console.print(
            f"  trial {trial['id']}: {trial['status_name']} — {verdict}{trial['message']}",
            highlight=False,
            soft_wrap=True,
        )


@update_app.command("retry")
def update_retry(
    update_id: int,
    wait: WaitOpt = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Retry a failed update (Image Update Retry)."""
    with ApiClient(server, token) as c:
        job = c.post(f"/updates/{update_id}/retry")
        if wait:
            job = c.wait_job(f"/updates/{update_id}")
    finish_job("update", job, as_json)


# -- diff analyses -------------------------------------------------------------------------


def _download_line(r: dict[str, Any]) -> str:
    """Before the update is accepted only whole files can be counted (an upper bound);
    accepting it builds the patches, and then the real figure is known."""
    full = f"full build {human_bytes(r['new_bytes'])}"
    published = r.get("published_download_bytes")
    if published is None:
        return (
            "estimated download for a host on the current version: at most"
            f" {human_bytes(r['download_bytes'])} (whole files; accepting builds patches,"
            f" which can only make it smaller; {full})"
        )
    return (
        "download for a host on the base version, with the published patches:"
        f" {human_bytes(published)} (whole files {human_bytes(r['download_bytes'])}; {full})"
    )


def _print_diff(d: dict[str, Any], all_files: bool) -> None:
    job_line("diff", d)
    console.print(f"decision: {d['decision']}", highlight=False)
    r = d.get("report")
    if not r:
        return
    base = r.get("base_version")
    console.print(f"against version: {base if base is not None else 'none (first version)'}")
    t = r["totals"]
    table(
        "changes",
        ["kind", "files", "bytes"],
        [
            [k, t[k]["files"], human_bytes(t[k]["bytes"])]
            for k in ("added", "changed", "removed", "unchanged")
        ],
    )
    console.print(_download_line(r), highlight=False, soft_wrap=True)
    files = [f for f in r.get("files", []) if all_files or f["change"] != "unchanged"]
    if files:
        table(
            "files",
            ["change", "path", "old size", "new size"],
            [
                [f["change"], f["path"], human_bytes(f["old_size"]), human_bytes(f["new_size"])]
                for f in files[:200]
            ],
        )
        if len(files) > 200:
            console.print(f"… and {len(files) - 200} more (use --json for all)")


@diff_app.command("create")
def diff_create(
    image: ImageOpt,
    update: Annotated[int, typer.Option("--update", help="The update to analyse.")],
    wait: WaitOpt = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Analyse an update against the image's current version (locks the image)."""
    with ApiClient(server, token) as c:
        d = c.post(f"/images/{image}/diffs", json={"update_id": update})
        if not wait:
            print_json(d) if as_json else job_line("diff", d)
            return
        d = c.wait_job(f"/diffs/{d['id']}")
    if as_json:
        print_json(d)
    else:
        _print_diff(d, all_files=False)
    if d["status"] == JobState.FAILED:
        raise typer.Exit(JOB_FAILED)


@diff_app.command("show")
def diff_show(
    diff_id: int,
    all_files: Annotated[bool, typer.Option("--all", help="List unchanged files too.")] = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Show a diff analysis (Image Diff Status) with its per-file changes."""
    with ApiClient(server, token) as c:
        d = c.get(f"/diffs/{diff_id}")
    print_json(d) if as_json else _print_diff(d, all_files)


@diff_app.command("retry")
def diff_retry(
    diff_id: int,
    wait: WaitOpt = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Retry a failed diff analysis."""
    with ApiClient(server, token) as c:
        d = c.post(f"/diffs/{diff_id}/retry")
        if wait:
            d = c.wait_job(f"/diffs/{diff_id}")
    finish_job("diff", d, as_json)


@diff_app.command("reject")
def diff_reject(
    diff_id: int, server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Reject a diff analysis; unlocks the image."""
    with ApiClient(server, token) as c:
        d = c.post(f"/diffs/{diff_id}/reject")
    print_json(d) if as_json else console.print(f"diff {diff_id} rejected; image unlocked")


@diff_app.command("accept")
def diff_accept(
    diff_id: int,
    wait: WaitOpt = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Accept a diff analysis: create the image version (a job)."""
    with ApiClient(server, token) as c:
        v = c.post(f"/diffs/{diff_id}/accept")
        if wait:
            v = c.wait_job(f"/versions/{v['id']}")
    if not as_json:
        console.print(f"version {v['number']}" + (f" ({v['label']})" if v["label"] else ""))
    finish_job("version job", v, as_json)


# -- versions and branches -----------------------------------------------------------------


@version_app.command("list")
def version_list(
    image: ImageOpt, server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """List an image's versions."""
    with ApiClient(server, token) as c:
        rows = c.get(f"/images/{image}/versions")
    if as_json:
        print_json(rows)
        return
    table(
        f"versions of {image}",
        ["version", "label", "status", "files", "size", "manifest", "created"],
        [
            [
                r["number"],
                r["label"],
                r["status_name"],
                r["file_count"],
                human_bytes(r["total_bytes"]),
                r["manifest_id"][:12],
                when(r["created_at"]),
            ]
            for r in rows
        ],
    )


@version_app.command("retry")
def version_retry(
    image: ImageOpt,
    version: Annotated[str, typer.Argument(help="Number or label.")],
    wait: WaitOpt = False,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Retry a failed version job (publishing an accepted version)."""
    with ApiClient(server, token) as c:
        v = c.post(f"/images/{image}/versions/{version}/retry")
        if wait:
            v = c.wait_job(f"/versions/{v['id']}")
    finish_job("version job", v, as_json)


@version_app.command("show")
def version_show(
    image: ImageOpt,
    version: Annotated[str, typer.Argument(help="Number, label or 'latest'.")] = "latest",
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Show one version (Image Version Status)."""
    with ApiClient(server, token) as c:
        v = c.get(f"/images/{image}/versions/{version}")
    if as_json:
        print_json(v)
        return
    job_line("version job", v)
    for k in ("number", "label", "manifest_id", "file_count", "total_bytes"):
        console.print(f"{k}: {v[k]}", highlight=False)


@branch_app.command("set")
def branch_set(
    branch: str,
    image: ImageOpt,
    version: Annotated[str, typer.Option("--version", help="Number, label or 'latest'.")],
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Point BRANCH of an image at a version (admin)."""
    with ApiClient(server, token) as c:
        b = c.put(f"/images/{image}/branches/{branch}", json={"version": version})
    print_json(b) if as_json else console.print(
        f"{image} {b['name']} -> version {b['version']}"
        + (f" ({b['label']})" if b["label"] else ""),
        highlight=False,
    )


@branch_app.command("list")
def branch_list(
    image: ImageOpt, server: ServerOpt = "", token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """List an image's branches."""
    with ApiClient(server, token) as c:
        rows = c.get(f"/images/{image}/branches")
    if as_json:
        print_json(rows)
        return
    table(
        f"branches of {image}",
        ["branch", "version", "label", "updated", "by"],
        [
            [r["name"], r["version"], r["label"], when(r["updated_at"]), r["updated_by"]]
            for r in rows
        ],
    )


@branch_app.command("history")
def branch_history(
    branch: str,
    image: ImageOpt,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Every change of a branch: who, when, from, to."""
    with ApiClient(server, token) as c:
        rows = c.get(f"/images/{image}/branches/{branch}/history")
    if as_json:
        print_json(rows)
        return
    table(
        f"history of {image} {branch}",
        ["when", "from", "to", "who"],
        [[when(r["at"]), r["from_version"], r["to_version"], r["actor"]] for r in rows],
    )
