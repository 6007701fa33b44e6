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


def _outcome_to(executable: Path | None, status: str = "updated") -> object:
    from changeover.launcher.selfupdate import Outcome

    return Outcome(status, executable, "2.0.0", "the launcher updated itself to 2.0.0")  # type: ignore[arg-type]


@pytest.fixture
def packaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A frozen-looking launcher at ``tmp_path/pkg`` with a valid launcher.toml."""
    config = tmp_path / "launcher.toml"
    config.write_text(
        'title = "T"\ncontent_url = "http://127.0.0.1:9/content"\nroot = "root.json"\n'
        f'image = "g"\ninstall_dir = "{tmp_path / "games"}"\n[[branches]]\nname = "production"\n'
        '[game.linux]\nexecutable = "g"\n[launcher]\nimage = "g-launcher"\n'
    )
    (tmp_path / "pkg").mkdir()
    monkeypatch.setattr(main.sys, "frozen", True, raising=False)
    monkeypatch.setattr(main.sys, "executable", str(tmp_path / "pkg" / "changeover-launcher"))
    monkeypatch.setattr(main, "APP_MODULE", "changeover.launcher.no_such_app")
    return config


def test_frozen_start_restarts_into_the_updated_launcher(
    packaged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = tmp_path / "games" / ".launcher" / "a" / "changeover-launcher"
    monkeypatch.setattr(
        "changeover.launcher.selfupdate.SelfUpdater.run", lambda self: _outcome_to(new)
    )
    restarts: list[tuple[Path, list[str], str]] = []

    def restart(exe: Path, args: list[str], version: str) -> int:
        restarts.append((exe, args, version))
        return 0

    monkeypatch.setattr("changeover.launcher.selfupdate.restart", restart)
    assert main.run(["--config", str(packaged)]) == 0
    assert restarts == [(new, ["--config", str(packaged)], "2.0.0")]


def test_frozen_start_goes_on_when_the_update_is_itself_or_cannot_start(
    packaged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = tmp_path / "pkg" / "changeover-launcher"
    outcomes = iter([_outcome_to(running, "up-to-date"), _outcome_to(tmp_path / "gone")])
    monkeypatch.setattr(
        "changeover.launcher.selfupdate.SelfUpdater.run", lambda self: next(outcomes)
    )

    def restart(exe: Path, args: list[str], version: str) -> int:
        raise FileNotFoundError(2, "No such file", str(exe))

    monkeypatch.setattr("changeover.launcher.selfupdate.restart", restart)
    # Already the running launcher: no restart; the app (missing here) is next.
    assert main.run(["--config", str(packaged)]) == main.NO_APP
    # The new one cannot be started: this one goes on.
    assert main.run(["--config", str(packaged)]) == main.NO_APP


def test_a_restarted_launcher_does_not_update_again(
    packaged: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no(self: object) -> None:
        raise AssertionError("the restarted launcher checked for an update again")

    monkeypatch.setattr("changeover.launcher.selfupdate.SelfUpdater.run", no)
    monkeypatch.setenv("CHANGEOVER_LAUNCHER_RESTARTED", "2.0.0")
    assert main.run(["--config", str(packaged)]) == main.NO_APP
