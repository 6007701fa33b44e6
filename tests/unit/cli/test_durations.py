"""The CLI's one duration syntax: the parser, and real ``changeover`` commands taking it."""

from __future__ import annotations

import pytest

from changeover.cli import durations
from changeover.errors import InvalidInput
from tests_helpers import free_port, run_cli


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("12h", 43200.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
    ],
)
def test_the_syntax(text: str, seconds: float) -> None:
    assert durations.seconds("--x", text) == seconds


def test_bad_durations_name_the_flag_and_the_syntax() -> None:
    for bad in ("", "5x", "-3", "m", "1e999"):
        with pytest.raises(InvalidInput, match=r"--x"):
            durations.seconds("--x", bad)
    with pytest.raises(InvalidInput, match=r"give at least 0\.1 s"):
        durations.seconds("--x", "0", low=0.1)


def test_every_duration_option_takes_the_same_syntax() -> None:
    """Options that took plain seconds before (``--drain 12h`` was "not a valid float")."""
    server = f"http://127.0.0.1:{free_port()}"  # nothing listens: parsing is what is tested
    cases = [
        ["fleet", "switch", "f", "--profile", "p", "--drain", "12h"],
        [
            "fleet",
            "profile",
            "create",
            "p",
            "--app",
            "a",
            "--image",
            "i",
            "--command",
            "x",
            "--stop-timeout",
            "2m",
        ],
        # min > max: refused after parsing, before any bot plays
        ["bots", "--fleet", "f", "--duration", "5m", "--session-min", "1m", "--session-max", "2s"],
        ["token", "create", "--scope", "viewer", "--expires-in", "90d", "--server", server],
    ]
    for case in cases:
        args = case if "--server" in case else [*case, "--server", server]
        out = run_cli(*args, env={"CHANGEOVER_TOKEN": "cho_1_x"})
        assert "Invalid value" not in out.stderr and "give a duration" not in out.stderr, (
            args,
            out.stderr,
        )
        assert out.returncode != 0  # it went on, to the absent server or a later check
    bad = run_cli("fleet", "switch", "f", "--profile", "p", "--drain", "12x", "--server", server)
    assert bad.returncode != 0
    assert "--drain '12x': give a duration such as 30, 30s, 5m, 12h or 1d" in bad.stderr
