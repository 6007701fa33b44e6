"""What the window shows, decided from the engine's facts: a pure view-model, no Qt.

The window keeps one :class:`BranchState` per branch (several are installed side by side)
and feeds it what its workers report: what is installed (read offline), what the server's
branch points at (or that the server could not be reached), progress events, how a job
ended. :func:`view` turns the selected branch's state into a :class:`View`: which phase the
player sees, what each label says in numbers, which buttons are enabled. Widgets only
render a View and forward clicks; every rule ("Play is disabled while that branch
updates", "an install plays offline") lives here and is tested without a display.

    checking ─► not installed ─► (install) [waiting ─►] updating ⇄ paused
        │                              │
        ├─► update available ──────────┘──► ready ─► (play)
        ├─► offline (installed: plays; not installed: nothing to play)
        └─► error (a message; what is installed still plays)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Literal

from changeover.launcher.engine import Available, Installed, ProgressEvent

JobKind = Literal["sync", "repair", "verify"]


class Phase(enum.Enum):
    CHECKING = "checking"
    NOT_INSTALLED = "not installed"
    UPDATE_AVAILABLE = "update available"
    WAITING = "waiting"
    """Queued behind another branch's update (they share one cache)."""
    UPDATING = "updating"
    VERIFYING = "verifying"
    PAUSED = "paused"
    READY = "ready"
    UPDATE_REQUIRED = "update required"
    """The live servers refuse the installed client (seed 002): update before playing."""
    OFFLINE = "offline"
    ERROR = "error"


@dataclass(frozen=True)
class BranchState:
    """Everything known about one branch's install, as the workers reported it."""

    installed: Installed | None = None
    installed_known: bool = False
    """``installed`` was read at least once (``None`` before that means "not yet known")."""
    available: Available | None = None
    offline: bool = False
    """The last check could not reach the server."""
    checking: bool = False
    job: JobKind | None = None
    progress: ProgressEvent | None = None
    waiting: bool = False
    """The job is queued behind another branch's: nothing from it has arrived yet."""
    paused: bool = False
    """A sync was paused: what arrived is kept; Resume starts it again."""
    error: str | None = None
    """The last failure, in a player's words (already translated by the caller)."""
    notice: str | None = None
    """The last outcome worth saying that is not an error (cancelled, repaired …)."""
    refused: str | None = None
    """Why the live servers refuse the installed client, from the last check (None: they
    accept it, or it is not known)."""

    # Transitions: each returns the next state; the window replaces its copy.

    def with_installed(self, installed: Installed | None) -> BranchState:
        return replace(self, installed=installed, installed_known=True)

    def check_started(self) -> BranchState:
        return replace(self, checking=True)

    def check_succeeded(self, available: Available, refused: str | None = None) -> BranchState:
        error = None if self.offline else self.error
        return replace(
            self,
            checking=False,
            available=available,
            offline=False,
            error=error,
            refused=refused,
        )

    def check_failed(self, message: str, *, unreachable: bool) -> BranchState:
        """``unreachable``: the server did not answer (offline), else it refused."""
        return replace(
            self,
            checking=False,
            offline=unreachable,
            error=message,
            available=None if unreachable else self.available,
        )

    def job_started(self, kind: JobKind, *, waiting: bool = False) -> BranchState:
        return replace(
            self, job=kind, waiting=waiting, progress=None, paused=False, error=None, notice=None
        )

    def job_progress(self, event: ProgressEvent) -> BranchState:
        return replace(self, progress=event, waiting=False)

    def job_succeeded(self, notice: str | None = None) -> BranchState:
        """A job ended well; a refusal is for the client that was installed, so it goes
        (the next check says again if the new one is refused too)."""
        return replace(
            self,
            job=None,
            waiting=False,
            progress=None,
            paused=False,
            error=None,
            notice=notice,
            refused=None,
        )

    def job_paused(self) -> BranchState:
        return replace(self, job=None, waiting=False, paused=True)

    def job_cancelled(self, notice: str) -> BranchState:
        return replace(self, job=None, waiting=False, progress=None, paused=False, notice=notice)

    def job_failed(self, message: str) -> BranchState:
        return replace(self, job=None, waiting=False, paused=False, error=message)


@dataclass(frozen=True)
class View:
    """What the widgets show for the selected branch."""

    phase: Phase
    installed_version: str | None
    available_version: str | None
    progress_visible: bool
    progress_busy: bool
    """The progress bar has no total yet (checking, installing): an indeterminate bar."""
    progress_permille: int
    done_bytes: int
    total_bytes: int
    bytes_per_s: float
    eta_s: float | None
    play_enabled: bool
    action: Literal["install", "update", "resume", "none"]
    """What the main action button does; ``none`` hides it."""
    action_enabled: bool
    pause_enabled: bool
    cancel_enabled: bool
    verify_enabled: bool
    message: str | None
    message_is_error: bool
    download_bytes: int = 0
    """What moving to the available version would download (for "update available")."""


def version_text(version: int, label: str | None) -> str:
    """``1.2.0 (version 4)`` when labelled, ``version 4`` otherwise."""
    return f"{label} (version {version})" if label else f"version {version}"


def view(state: BranchState) -> View:
    """The View of one branch's state."""
    installed = state.installed
    available = state.available
    busy = state.job is not None
    needs_update = available is not None and not available.up_to_date

    if busy and state.waiting:
        phase = Phase.WAITING
    elif state.job in {"verify", "repair"}:
        phase = Phase.VERIFYING
    elif busy:
        phase = Phase.UPDATING
    elif state.paused:
        phase = Phase.PAUSED
    elif state.checking and available is None and not state.offline:
        phase = Phase.CHECKING
    elif state.offline:
        phase = Phase.OFFLINE
    elif state.error is not None:
        phase = Phase.ERROR
    elif installed is None and not state.installed_known:
        phase = Phase.CHECKING
    elif installed is None:
        phase = Phase.NOT_INSTALLED if available is not None else Phase.CHECKING
    elif state.refused is not None:
        phase = Phase.UPDATE_REQUIRED
    elif needs_update:
        phase = Phase.UPDATE_AVAILABLE
    else:
        phase = Phase.READY

    progress = state.progress
    downloading = progress is not None and progress.phase == "downloading"
    total = progress.total_bytes if progress is not None else 0
    done = progress.done_bytes if progress is not None else 0
    permille = min(1000, done * 1000 // total) if downloading and total > 0 else 0

    # Play needs a complete install and no job on this branch: an update switches the tree
    # under the game, and a paused update is an update in progress.
    # Nor when the servers refuse the installed client: the game could not join them.
    play = installed is not None and not busy and not state.paused and state.refused is None
    if state.paused:
        action: Literal["install", "update", "resume", "none"] = "resume"
    elif installed is None and not state.offline:
        action = "install"
    elif needs_update:
        action = "update"
    else:
        action = "none"
    action_enabled = not busy and (action == "resume" or available is not None)

    message = state.error or state.notice or state.refused
    return View(
        phase=phase,
        installed_version=version_text(installed.version, installed.label) if installed else None,
        available_version=version_text(available.version, available.label) if available else None,
        progress_visible=busy or state.paused,
        progress_busy=busy and not (downloading and total > 0),
        progress_permille=permille,
        done_bytes=done,
        total_bytes=total,
        bytes_per_s=progress.bytes_per_s if progress is not None and busy else 0.0,
        eta_s=progress.eta_s if progress is not None and busy else None,
        play_enabled=play,
        action=action,
        action_enabled=action_enabled,
        pause_enabled=state.job == "sync" and not state.waiting,
        cancel_enabled=state.job in ("sync", "repair") or state.paused,
        verify_enabled=installed is not None and not busy and not state.paused,
        message=message,
        # A refusal is shown as a problem; a notice (cancelled, repaired …) comes first.
        message_is_error=state.error is not None
        or (state.notice is None and state.refused is not None),
        download_bytes=available.download_bytes if needs_update and available else 0,
    )
