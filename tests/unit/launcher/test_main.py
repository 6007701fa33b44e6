"""``changeover-launcher``'s routing: which command line goes where (no process, no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from changeover.launcher import main
from changeover.launcher.main import Route, route


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], Route("start")),
        (["--config", "studio.toml"], Route("start", Path("studio.toml"))),
        (["--config=studio.toml"], Route("start", Path("studio.toml"))),
        (["--version"], Route("version")),
        (["self-update"], Route("self-update")),
        (
            ["self-update", "--json", "--config", "x.toml"],
            Route("self-update", Path("x.toml"), True),
        ),
        (["sync", "http://h/content", "dir", "--image", "g"], Route("command")),
        (["verify", "dir"], Route("command")),
        (["repair", "dir"], Route("command")),
        (["status", "dir", "--json"], Route("command")),
        # Everything else is the Typer app's to parse and to explain.
        (["--help"], Route("typer")),
        (["--config"], Route("typer")),
        (["--config", "a", "--config", "b"], Route("typer")),
        (["self-update", "--bogus"], Route("typer")),
        (["self-update", "extra"], Route("typer")),
        (["launcher", "sync"], Route("typer")),
        (["--version", "sync"], Route("typer")),
    ],
)
def test_route(args: list[str], expected: Route) -> None:
    assert route(args) == expected


def test_version_is_dev_unpackaged_and_printed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main.version() == "dev"
    assert main.run(["--version"]) == 0
    assert capsys.readouterr().out == "dev\n"


def test_commands_go_through_the_fast_path_then_typer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, list[str]]] = []

    def fast(args: list[str]) -> int | None:
        seen.append(("fast", args))
        return 7 if args[1] == "verify" else None

    def typer(args: list[str]) -> int:
        seen.append(("typer", args))
        return 2

    monkeypatch.setattr("changeover.cli.fastpath.run", fast)
    monkeypatch.setattr("changeover.cli.standalone.run_typer", typer)
    assert main.run(["verify", "d"]) == 7
    assert main.run(["status", "d"]) == 2
    assert main.run(["--help"]) == 2
    assert seen == [
        ("fast", ["launcher", "verify", "d"]),
        ("fast", ["launcher", "status", "d"]),
        ("typer", ["status", "d"]),
        ("typer", ["--help"]),
    ]


def test_start_without_the_app_exits_2_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(main, "APP_MODULE", "changeover.launcher.no_such_app")
    assert main.run(["--config", str(tmp_path / "launcher.toml")]) == main.NO_APP
    err = capsys.readouterr().err
    assert "the desktop app is not part of this build" in err
    assert "no_such_app" in err


def test_start_runs_the_app_with_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import types

    got: list[Path] = []
    app = types.ModuleType("fake_app")
    app.run = lambda config: got.append(config) or 5  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_app", app)
    monkeypatch.setattr(main, "APP_MODULE", "fake_app")
    monkeypatch.setenv("CHANGEOVER_LAUNCHER_RESTARTED", "2.0.0")
    config = tmp_path / "launcher.toml"
    assert main.run(["--config", str(config)]) == 5
    assert got == [config]
    # The marker is for this launcher alone: the game it starts does not inherit it.
    import os

    assert "CHANGEOVER_LAUNCHER_RESTARTED" not in os.environ


def test_unfrozen_start_does_not_update_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no(*args: object) -> None:
        raise AssertionError("a development run must not self-update")

    monkeypatch.setattr(main, "_update_and_restart", no)
    monkeypatch.setattr(main, "APP_MODULE", "changeover.launcher.no_such_app")
    assert main.run([]) == main.NO_APP


def test_self_update_command_reports_a_missing_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "launcher.toml"
    config.write_text(
        'title = "T"\ncontent_url = "http://127.0.0.1:9/content"\nroot = "root.json"\n'
        'image = "g"\n[[branches]]\nname = "production"\n[game.linux]\nexecutable = "g"\n'
    )
    assert main.run(["self-update", "--config", str(config)]) == 1
    assert "no [launcher] image" in capsys.readouterr().out
