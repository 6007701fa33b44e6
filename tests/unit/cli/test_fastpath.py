"""cli.fastpath: which command lines it answers, and that it answers without Typer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from changeover.cli import fastpath
from changeover.errors import InvalidInput


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["game"], (Path("game"), None, False)),
        (["game", "--json"], (Path("game"), None, True)),
        (["--json", "--cache", "c", "game"], (Path("game"), Path("c"), True)),
        (["game", "--cache=c"], (Path("game"), Path("c"), False)),
    ],
)
def test_plain_verify_lines_are_parsed(
    args: list[str], expected: tuple[Path, Path | None, bool]
) -> None:
    assert fastpath._verify_args(args) == expected


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["game", "--help"],
        ["game", "other"],
        ["game", "--bogus"],
        ["game", "--cache"],
        ["game", "--cache", "--json"],
        ["game", "--cache="],
        [""],
    ],
)
def test_anything_else_goes_to_the_typer_app(args: list[str]) -> None:
    assert fastpath._verify_args(args) is None
    assert fastpath.run(["launcher", "verify", *args]) is None


SYNC = ["http://h/content", "game", "--image", "arena"]


@pytest.mark.parametrize(
    ("args", "changed"),
    [
        (SYNC, {}),
        ([*SYNC, "--json"], {"as_json": True}),
        (["--image=arena", "http://h/content", "game"], {}),
        ([*SYNC, "--branch", "beta", "--cache", "c"], {"branch": "beta", "cache": Path("c")}),
        ([*SYNC, "--workers", "32", "--timeout=0.5"], {"workers": 32, "timeout": 0.5}),
        (
            [*SYNC, "--limit-rate", "5M", "--root", "r.json"],
            {"limit_rate": "5M", "root": Path("r.json")},
        ),
        ([*SYNC, "--min-rate=8K"], {"min_rate": "8K"}),
        ([*SYNC, "--copy"], {"copy": True}),
        ([*SYNC, "--no-copy"], {"copy": False}),
    ],
)
def test_plain_sync_lines_are_parsed(args: list[str], changed: dict[str, object]) -> None:
    expected = {
        "base_url": "http://h/content",
        "directory": Path("game"),
        "image": "arena",
        "branch": "production",
        "cache": None,
        "root": None,
        "limit_rate": None,
        "workers": 4,
        "timeout": 30.0,
        "min_rate": None,
        "copy": None,
        "as_json": False,
    }
    assert fastpath._sync_args(args) == {**expected, **changed}


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["http://h/content", "game"],  # no --image: Typer says it is missing
        [*SYNC, "extra"],
        [*SYNC, "--help"],
        [*SYNC, "--workers", "0"],
        [*SYNC, "--workers", "33"],
        [*SYNC, "--workers", "many"],
        [*SYNC, "--timeout", "0"],
        [*SYNC, "--timeout", "nan"],
        [*SYNC, "--image", "again"],
        [*SYNC, "--json=yes"],
        [*SYNC, "--branch"],
        [*SYNC, "--branch", "--json"],
        [*SYNC, "--bogus"],
        [*SYNC, "--copy", "--no-copy"],  # Typer says which wins
        [*SYNC, "--copy=yes"],
    ],
)
def test_other_sync_lines_go_to_the_typer_app(args: list[str]) -> None:
    assert fastpath._sync_args(args) is None
    assert fastpath.run(["launcher", "sync", *args]) is None


def test_a_bad_rate_is_a_clear_error() -> None:
    assert fastpath.parse_rate("5M") == 5 << 20
    assert fastpath.parse_rate("1.5K") == 1536
    for bad in ("fast", "0", "-5M", "5X"):
        with pytest.raises(InvalidInput, match="--limit-rate"):
            fastpath.parse_rate(bad)


def test_other_commands_go_to_the_typer_app() -> None:
    assert fastpath.run(["fleet", "list"]) is None
    assert fastpath.run([]) is None


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["verify", "{none}"], "{none} is not a changeover install"),
        (
            ["sync", "http://127.0.0.1:9/content", "{none}", "--image", "a", "--limit-rate", "x"],
            "--limit-rate 'x': use a number of bytes/s such as 500K or 5M",
        ),
    ],
)
def test_the_fast_path_imports_neither_typer_nor_rich(
    tmp_path: Path, command: list[str], message: str
) -> None:
    # The point of the fast path: a player's update pays for the work, not for the CLI.
    none = str(tmp_path / "none")
    command = [c.replace("{none}", none) for c in command]
    code = f"""
import sys
from changeover.cli import fastpath
from changeover.errors import InvalidInput
try:
    fastpath.run(["launcher", *{command!r}])
except InvalidInput as e:
    print(e.message)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("typer", "click", "rich"))
print(heavy)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == [message.replace("{none}", none), "[]"]
