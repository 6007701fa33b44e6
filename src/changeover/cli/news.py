"""``changeover news post|list|delete|auto``: the news feed of an image branch
(``docs/news.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from changeover.cli.output import JsonOpt, ServerOpt, TokenOpt, console, print_json, table, when
from changeover.client import ApiClient
from changeover.errors import InvalidInput

news_app = typer.Typer(
    help="News: the feed of an image branch that launchers show.", no_args_is_help=True
)

ImageOpt = Annotated[str, typer.Option("--image", help="Image name.")]
BranchArg = Annotated[str, typer.Argument(help="Branch whose feed it is.")]


def register(app: typer.Typer) -> None:
    app.add_typer(news_app, name="news")


def _feed(image: str, branch: str) -> str:
    return f"/images/{image}/news/{branch}"


@news_app.command("post")
def news_post(
    branch: BranchArg,
    image: ImageOpt,
    title: Annotated[str, typer.Option("--title", help="One line of plain text.")],
    body: Annotated[str, typer.Option("--body", help="Plain text.")] = "",
    body_file: Annotated[
        Path | None, typer.Option("--body-file", help="Read the body from a UTF-8 file.")
    ] = None,
    link: Annotated[str | None, typer.Option("--link", help="An http(s) URL.")] = None,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Post an entry to a branch's feed (admin)."""
    if body_file is not None:
        try:
            body = body_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidInput(f"cannot read the body from {body_file}: {e}") from e
    payload = {"title": title, "body": body, "link": link}
    with ApiClient(server, token) as c:
        out = c.post(_feed(image, branch), json=payload)
    print_json(out) if as_json else console.print(
        f"news entry {out['id']} posted to {image} {branch}", highlight=False
    )


@news_app.command("list")
def news_list(
    branch: BranchArg,
    image: ImageOpt,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """A branch's entries, newest first."""
    with ApiClient(server, token) as c:
        rows = c.get(_feed(image, branch), params={"limit": limit})
    if as_json:
        print_json(rows)
        return
    table(
        f"news of {image} {branch}",
        ["id", "posted", "by", "title", "link"],
        # Escaped: an entry's text is shown as typed, never read as Rich markup.
        [
            [r["id"], when(r["created_at"]), escape(r["created_by"]), escape(r["title"]), r["link"]]
            for r in rows
        ],
    )


@news_app.command("delete")
def news_delete(
    branch: BranchArg,
    entry_id: Annotated[int, typer.Argument(help="The entry's id (see 'news list').", min=1)],
    image: ImageOpt,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Delete an entry (admin); the feed is rewritten at once."""
    with ApiClient(server, token) as c:
        out = c.delete(f"{_feed(image, branch)}/{entry_id}")
    print_json(out) if as_json else console.print(
        f"news entry {entry_id} deleted from {image} {branch}", highlight=False
    )


@news_app.command("auto")
def news_auto(
    branch: BranchArg,
    image: ImageOpt,
    on: Annotated[
        bool | None,
        typer.Option(
            "--on/--off",
            help="Post '<label> released' each time the branch moves, or stop (admin);"
            " neither: show the setting.",
        ),
    ] = None,
    server: ServerOpt = "",
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Automatic release entries of a branch's feed."""
    with ApiClient(server, token) as c:
        url = f"{_feed(image, branch)}/auto"
        out = c.get(url) if on is None else c.put(url, json={"enabled": on})
    print_json(out) if as_json else console.print(
        f"{image} {branch}: automatic release news {'on' if out['enabled'] else 'off'}",
        highlight=False,
    )
