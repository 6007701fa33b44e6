"""The launcher imports where Unix-only modules, the control plane, its database and its
web framework are missing (issue 19: players run it on Windows, standalone)."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import changeover.launcher

BLOCKED = (
    # Unix-only: absent on Windows.
    "fcntl",
    "pwd",
    "grp",
    "termios",
    "resource",
    # The server side: a player's machine has no business loading them.
    "sqlalchemy",
    "fastapi",
    "starlette",
    "uvicorn",
    "psycopg",
    "alembic",
    "changeover.control",
    "boto3",
    "botocore",
    # Not in a player's package: its import alone costs a player 0.2 s (README).
    "httpx",
)

BLOCKER = Path(__file__).parents[2] / "import_blocker.py"


def launcher_modules(*, app: bool = False) -> list[str]:
    """Every module of the launcher package, and the CLI's fast path (what a player's
    ``changeover launcher sync`` runs). Walked on disk, importing nothing here."""
    found = ["changeover.launcher"]
    pending = [(list(changeover.launcher.__path__), "changeover.launcher.")]
    while pending:
        path, prefix = pending.pop()
        for info in pkgutil.iter_modules(path, prefix):
            if info.name == "changeover.launcher.app" and not app:
                continue  # the GUI (Qt): its own test below, where PySide6 is installed
            found.append(info.name)
            if info.ispkg:
                sub = Path(path[0]) / info.name.rsplit(".", 1)[1]
                pending.append(([str(sub)], info.name + "."))
    return [*sorted(found), "changeover.cli.fastpath"]


def test_every_launcher_module_is_found() -> None:
    # The walk must see the modules the engine is made of, or the test below proves nothing.
    modules = launcher_modules()
    names = ("engine", "sync", "install", "objects", "fetch", "trust", "config", "switch")
    for name in (*names, "news", "compat", "selfupdate", "main"):
        assert f"changeover.launcher.{name}" in modules


def _import_blocked(modules: list[str]) -> None:
    args = [sys.executable, "-I", str(BLOCKER)]
    for name in BLOCKED:
        args += ["--block", name]
    for name in modules:
        args += ["--import", name]
    # -I ignores PYTHONPATH and the user's site: the installed package is what is imported,
    # in a fresh interpreter where nothing of the test session is loaded yet.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"imported {len(modules)} of" in done.stdout


def test_launcher_imports_without_unix_only_or_server_modules() -> None:
    _import_blocked(launcher_modules())


def test_the_desktop_app_imports_without_unix_only_or_server_modules() -> None:
    modules = [
        m
        for m in launcher_modules(app=True)
        if m.startswith("changeover.launcher.app") and not m.endswith(".__main__")  # runs it
    ]
    assert "changeover.launcher.app.window" in modules
    _import_blocked(modules)


def test_the_blocker_blocks() -> None:
    # The proof is worth something only if an import of a blocked module fails.
    args = [sys.executable, "-I", str(BLOCKER), "--block", "fcntl", "--import", "fcntl"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "import of fcntl is blocked" in done.stderr
    args = [sys.executable, "-I", str(BLOCKER), "--block", "changeover.control"]
    args += ["--import", "changeover.control.db"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
