"""Build the standalone launcher: ``dist/changeover-launcher/changeover-launcher``.

    python packaging/build.py [--version 1.2.0] [--config studio/launcher.toml]
                              [--dist DIR] [--work DIR] [--without-app]

PyInstaller freezes ``changeover.launcher`` into one folder (``changeover-launcher.spec``)
that runs with no Python on the machine. ``--version`` is what the executable's
``--version`` prints (and the label a studio publishes the folder under, for its
self-update); ``--config`` puts a studio's ``launcher.toml`` beside the executable, with
the files it names (the pinned ``root``, the ``logo``), after checking it the way the
launcher will. ``make package`` runs this with the defaults.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPEC = HERE / "changeover-launcher.spec"
NAME = "changeover-launcher"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default=None, help="default: the project's version")
    parser.add_argument("--config", type=Path, help="a studio's launcher.toml to bundle")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="default: dist/")
    parser.add_argument("--work", type=Path, default=ROOT / "build", help="default: build/")
    parser.add_argument(
        "--without-app", action="store_true", help="leave the desktop app and Qt out"
    )
    args = parser.parse_args(argv)
    version = args.version or _project_version()
    config = _checked_config(args.config) if args.config else None
    without_app = args.without_app or not _app_importable()

    args.work.mkdir(parents=True, exist_ok=True)
    # A fixed path: a second build in the same --work reuses PyInstaller's analysis.
    version_file = args.work / "version.txt"
    version_file.write_text(version + "\n", encoding="utf-8")
    command = [
        sys.executable,
        "-m",
        "PyInstaller",
        "--noconfirm",
        "--log-level=WARN",
        f"--distpath={args.dist}",
        f"--workpath={args.work / 'pyinstaller'}",
        str(SPEC),
        "--",
        f"--version-file={version_file}",
        *(["--without-app"] if without_app else []),
    ]
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        return done.returncode
    folder = args.dist / NAME
    if config is not None:
        _bundle(config, folder)
    files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    size = sum(p.stat().st_size for p in files)
    print(f"{folder / NAME}: version {version}, {size:,} bytes in {len(files)} files")
    return 0


def _app_importable() -> bool:
    """Whether the desktop app (and its Qt) can go in; the package answers the commands
    either way, and says so when started without one."""
    sys.path.insert(0, str(ROOT / "src"))
    import importlib

    try:
        importlib.import_module("changeover.launcher.app")
    except ImportError as e:
        print(f"note: the desktop app is not importable here ({e}): the package will answer")
        print("      the commands only (install the app's extra to include it)")
        return False
    return True


def _project_version() -> str:
    sys.path.insert(0, str(ROOT / "src"))
    from changeover import __version__

    return __version__


def _checked_config(path: Path) -> list[tuple[Path, str]]:
    """The files to bundle, (source, path in the folder): the config and what it names,
    which must sit beside it or below, since the folder keeps their relative paths."""
    sys.path.insert(0, str(ROOT / "src"))
    from changeover.launcher.config import load

    config = load(path)  # a studio's typo stops the build, not a player's launcher
    here = path.resolve().parent
    files = [(path, "launcher.toml")]
    for named in (config.root, config.logo):
        if named is None:
            continue
        resolved = named.resolve()
        if not resolved.is_file():
            raise SystemExit(f"{path} names {named}, which does not exist")
        if not resolved.is_relative_to(here):
            raise SystemExit(f"{path} names {named}: bundled files must be beside it or below")
        files.append((resolved, resolved.relative_to(here).as_posix()))
    return files


def _bundle(files: list[tuple[Path, str]], folder: Path) -> None:
    for source, rel in files:
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)


if __name__ == "__main__":
    sys.exit(main())
