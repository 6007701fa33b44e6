"""The launcher updates itself through the same pipeline as the games it installs.

The studio publishes each build of the packaged launcher (``make package``) as versions of
an image of its own (``[launcher] image``/``branch`` in ``launcher.toml``): signed, patched,
switched atomically like any game. On start the launcher asks where that branch points and,
when it moved, installs it beside itself::

    <install_dir>/.launcher/
        a/  b/        two installs of the launcher image (slots), made by the Engine
        .changeover/  their shared cache: the second slot is patched from the first
        current       a pointer file naming the slot players run ("a" or "b")

An update goes into the slot ``current`` does not name, so the launcher that runs is never
touched: the slot is synced (signed metadata, patches, every byte verified), verified again
as a tree, and its executable must answer ``--version`` before ``current`` is rewritten, in
one atomic replace. A failure or a kill at any step leaves ``current`` (or, before the first
update, the launcher the player unpacked) as it was; the next start tries again. Then the
launcher restarts into the new executable (``os.execve``; on Windows a new process, since
it cannot replace itself) with :data:`RESTARTED_ENV` set, which stops the new one from
checking again, so it cannot loop.

A pointer file, not a symbolic link, names the current slot: replacing a file is atomic on
every platform. The slots themselves are installs of the Engine, switched its way.

:func:`decide`, :func:`other_slot`, :func:`probe_version` and :func:`child_env` are the
pure parts; :class:`SelfUpdater` applies them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from changeover.content.files import atomic_write
from changeover.errors import ChangeoverError, IntegrityError, InvalidInput
from changeover.launcher.config import LauncherConfig
from changeover.launcher.engine import Engine

RESTARTED_ENV = "CHANGEOVER_LAUNCHER_RESTARTED"
"""Set (to the version restarted into) in the environment of the launcher a self-update
starts: that one does not check for an update again."""
SLOTS = ("a", "b")
PROBE_TIMEOUT_S = 60.0
"""How long a new launcher's ``--version`` may take before it counts as broken (a frozen
one-folder launcher answers in well under a second)."""


def executable_name(platform: str = sys.platform) -> str:
    """The launcher's file name in its package."""
    return "changeover-launcher.exe" if platform.startswith("win") else "changeover-launcher"


def other_slot(current: str | None) -> str:
    """The slot an update goes into: the one not in use."""
    return SLOTS[1] if current == SLOTS[0] else SLOTS[0]


@dataclass(frozen=True)
class Decision:
    update: bool
    slot: str | None
    """The slot to install into (``update``), or the slot that already holds the branch's
    version (``None``: the running launcher is that version)."""
    reason: str


def decide(
    current_slot: str | None,
    installed_manifest: str | None,
    available_manifest: str,
    available_label: str | None,
    running_version: str,
) -> Decision:
    """Whether to update, given the current slot's install and where the branch points.

    Before the first update there is no slot: the running launcher is the one the player
    unpacked, and it is up to date when its packaged version is the branch's label (a
    studio publishes each package with its version as the label). A development build
    (``dev``) never matches: it always installs the published one.
    """
    if current_slot is not None and installed_manifest == available_manifest:
        return Decision(False, current_slot, "the launcher is up to date")
    if current_slot is None and running_version != "dev" and available_label == running_version:
        return Decision(False, None, f"the launcher is up to date ({running_version})")
    slot = other_slot(current_slot)
    return Decision(True, slot, f"the launcher's branch moved to {available_label or '?'}")


def probe_version(returncode: int, stdout: str) -> str | None:
    """What a new launcher's ``--version`` answered, if it is an answer: exit 0 and one
    non-empty line."""
    lines = stdout.strip().splitlines()
    if returncode != 0 or len(lines) != 1 or not lines[0].strip():
        return None
    return lines[0].strip()


def child_env(environ: Mapping[str, str], restarted: str | None = None) -> dict[str, str]:
    """The environment for another frozen launcher started from this one.

    A PyInstaller program changes its own environment for its libraries (it prepends its
    folder to ``LD_LIBRARY_PATH``, keeping the player's in ``LD_LIBRARY_PATH_ORIG``, and
    sets ``_PYI_*`` variables for its own child processes): a second, independent frozen
    program must not inherit those, or it loads the first one's libraries.
    ``PYINSTALLER_RESET_ENVIRONMENT`` tells its bootloader to start afresh.
    """
    env = dict(environ)
    for var in ("LD_LIBRARY_PATH", "LIBPATH"):
        original = env.pop(f"{var}_ORIG", None)
        if original is not None:
            env[var] = original
        elif getattr(sys, "frozen", False):
            env.pop(var, None)
    env["PYINSTALLER_RESET_ENVIRONMENT"] = "1"
    if restarted is not None:
        env[RESTARTED_ENV] = restarted
    return env


Status = Literal["updated", "up-to-date", "failed", "not-configured"]


@dataclass(frozen=True)
class Outcome:
    status: Status
    executable: Path | None
    """The launcher that should run now: the current slot's, or ``None`` for the running
    one (no slot yet)."""
    version: str | None
    """What that launcher's ``--version`` says, or the branch's label."""
    message: str
    downloaded_bytes: int = 0


@dataclass(frozen=True)
class Layout:
    """Where the launcher keeps its own installs."""

    root: Path

    @classmethod
    def of(cls, config: LauncherConfig) -> Layout:
        return cls(config.install_dir / ".launcher")

    @property
    def pointer(self) -> Path:
        return self.root / "current"

    @property
    def cache(self) -> Path:
        return self.root / ".changeover"

    def slot(self, name: str) -> Path:
        return self.root / name

    def executable(self, name: str) -> Path:
        return self.slot(name) / executable_name()

    def current(self) -> str | None:
        """The slot ``current`` names, if it names one."""
        try:
            name = self.pointer.read_text(encoding="utf-8").strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        return name if name in SLOTS else None

    def point_at(self, name: str) -> None:
        """Make ``name`` the current slot in one atomic replace."""
        atomic_write(self.pointer, f"{name}\n".encode())


class SelfUpdater:
    """One self-update check of the launcher that ``config`` configures."""

    def __init__(
        self, config: LauncherConfig, running_version: str, running_folder: Path | None = None
    ) -> None:
        """``running_folder``: the package folder this launcher runs from, whose files
        the update adopts instead of downloading them where they are the new version's
        (only the first update needs it: later ones patch from the current slot)."""
        self.config = config
        self.running_version = running_version
        self.running_folder = running_folder
        self.layout = Layout.of(config)

    def engine(self, slot: str) -> Engine:
        su = self.config.self_update
        if su is None:
            raise InvalidInput(f"{self.config.source}: [launcher] image is not set")
        try:
            root = self.config.root.read_bytes()
        except OSError as e:
            raise InvalidInput(
                f"{self.config.source}: cannot read the pinned root {self.config.root}:"
                f" {e.strerror}"
            ) from None
        return Engine(
            self.config.content_url,
            self.layout.slot(slot),
            su.image,
            su.branch,
            cache=self.layout.cache,
            root=root,
        )

    def current(self) -> tuple[str, str] | None:
        """The current slot and its installed manifest, if it holds a complete install."""
        slot = self.layout.current()
        if slot is None or not self.layout.executable(slot).is_file():
            return None
        installed = self.engine(slot).installed()
        return None if installed is None else (slot, installed.manifest)

    def run(self) -> Outcome:
        """Check the launcher's branch and install it if it moved. Never raises our errors:
        a self-update that fails leaves the launcher that runs as it was, and says why."""
        if self.config.self_update is None:
            return Outcome("not-configured", None, None, "no [launcher] image: no self-update")
        current: tuple[str, str] | None = None
        try:
            current = self.current()
            return self._run(current)
        except (ChangeoverError, OSError) as e:
            slot = current[0] if current else None
            return Outcome(
                "failed",
                self.layout.executable(slot) if slot else None,
                None,
                f"the launcher could not update itself: {_reason(e)}; it goes on with the"
                " version it has",
            )

    def _run(self, current: tuple[str, str] | None) -> Outcome:
        slot, manifest = current if current else (None, None)
        available = self.engine(slot or SLOTS[0]).check()
        decision = decide(slot, manifest, available.manifest, available.label, self.running_version)
        if not decision.update:
            executable = self.layout.executable(decision.slot) if decision.slot else None
            return Outcome("up-to-date", executable, available.label, decision.reason)
        assert decision.slot is not None
        target = self.engine(decision.slot)
        if self.running_folder is not None:
            target.adopt(self.running_folder)
        report = target.sync()
        found = target.verify()
        if not found.clean:
            bad = (found.missing + found.modified + found.extra)[0]
            raise IntegrityError(f"the new launcher's {bad}", "as published", "different")
        version = self.probe(self.layout.executable(decision.slot))
        self.layout.point_at(decision.slot)
        return Outcome(
            "updated",
            self.layout.executable(decision.slot),
            version,
            f"the launcher updated itself to {version} ({report.downloaded_bytes:,} bytes"
            " downloaded)",
            report.downloaded_bytes,
        )

    def probe(self, executable: Path) -> str:
        """What the new launcher's ``--version`` says.

        Raises:
            IntegrityError: it does not start, or does not answer in time.
        """
        try:
            done = subprocess.run(
                [str(executable), "--version"],
                env=child_env(os.environ, restarted="probe"),
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise IntegrityError(
                "the new launcher", "to answer --version", f"no answer ({e})"
            ) from None
        version = probe_version(done.returncode, done.stdout)
        if version is None:
            got = f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-200:]}"
            raise IntegrityError("the new launcher", "to answer --version", got)
        return version


def _reason(error: BaseException) -> str:
    if isinstance(error, ChangeoverError):
        return error.message
    return str(error)


def running_folder() -> Path | None:
    """The package folder of the running launcher, if it is a packaged one."""
    if not getattr(sys, "frozen", False):
        return None
    return Path(sys.executable).resolve().parent


def is_running(executable: Path, running: Path) -> bool:
    """Whether ``running`` (``sys.executable``) is ``executable``, by resolved path: two
    slots may hold the same bootloader bytes as hard links to one object, so comparing
    files (inodes) would take one for the other."""
    return executable.resolve() == running.resolve()


def restart(executable: Path, args: list[str], version: str) -> int:
    """Run ``executable`` with ``args`` in place of this launcher.

    On POSIX the process is replaced and this returns only if that failed (raising
    OSError). On Windows, where a running program cannot replace itself, the new one is
    started on its own and this returns 0 for the old one to exit with.
    """
    env = child_env(os.environ, restarted=version)
    argv = [str(executable), *args]
    if sys.platform.startswith("win"):
        subprocess.Popen(argv, env=env, close_fds=True)
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)  # noqa: S606 - a fixed argv: our own executable
    return 0  # pragma: no cover - execve does not return
