"""What a new user sees when something is missing or wrong: one readable line that says
what to do, at once, with the exit code of its kind (README, CLI conventions)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from changeover.cli.output import when
from fleet_helpers import catalogue, ok, profile, release
from tests_helpers import free_port, run_cli

pytestmark = pytest.mark.timeout(180)


def one_error_line(r: subprocess.CompletedProcess[str], code: int) -> str:
    assert r.returncode == code, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_no_token_says_which_variable_or_option_to_set(server: Any) -> None:
    line = one_error_line(server.cli("env", "list", token=""), 6)
    assert "CHANGEOVER_TOKEN" in line and "--token" in line, line
    assert "Authorization" not in line  # the HTTP header is the server's business


def test_an_unreachable_server_is_one_readable_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (("env", "list"), ("fleet", "switch", "f", "--profile", "p", "--wait")):
        line = one_error_line(run_cli(*args, env={"CHANGEOVER_URL": url}), 8)
        assert line == f"error: cannot reach the server at {url}: connection refused", line


def test_bots_on_an_unknown_fleet_fail_at_once_with_the_reason(server: Any) -> None:
    # An hour of play asked: the refusal must come before any of it (the subprocess's
    # timeout is a minute).
    r = run_cli(
        "bots", "--fleet", "no-such-fleet", "--duration", "3600", env=server.env(), timeout_s=60
    )
    line = one_error_line(r, 4)
    assert "unknown fleet 'no-such-fleet'" in line, line
    assert r.stdout == ""


def test_profile_show_prints_times_as_dates(server: Any) -> None:
    c = server.client()
    ok(c.post("/images", json={"name": "dates"}), 201)
    release(c, "dates", {"game": b"g"}, None)
    catalogue(c, "dates")
    made = profile(c, "dates-v1", "dates-game", "dates", "1")
    shown = server.cli("profile", "show", "dates-v1")
    assert shown.returncode == 0, shown.stderr
    assert f'"created_at": "{when(made["created_at"])}"' in shown.stdout, shown.stdout
    assert str(int(made["created_at"])) not in shown.stdout
