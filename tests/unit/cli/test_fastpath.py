"""cli.fastpath: which command lines it answers, and that it answers without Typer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from changeover.cli import fastpath


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


def test_other_commands_go_to_the_typer_app() -> None:
    assert fastpath.run(["launcher", "sync", "x"]) is None
    assert fastpath.run(["fleet", "list"]) is None
    assert fastpath.run([]) is None


def test_verify_imports_neither_typer_nor_rich(tmp_path: Path) -> None:
    # The point of the fast path: a player's verify pays for hashing, not for the CLI.
    code = f"""
import sys
from changeover.cli import fastpath
from changeover.errors import InvalidInput
try:
    fastpath.run(["launcher", "verify", {str(tmp_path / "none")!r}])
except InvalidInput as e:
    print(e.message)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("typer", "click", "rich"))
print(heavy)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == [f"{tmp_path / 'none'} is not a changeover install", "[]"]
