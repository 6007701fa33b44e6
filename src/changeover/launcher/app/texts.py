"""Every string a player reads, through Qt's translation mechanism.

Each text goes through ``QCoreApplication.translate`` in the ``Launcher`` context, so a
studio translates the launcher with Qt's own tools (``pyside6-lupdate`` extracts the
``tr(...)`` calls below into a ``.ts`` file; ``run`` loads ``launcher_<locale>.qm`` from
beside ``launcher.toml`` when there is one). Placeholders are ``{name}`` fields filled
after translation, so a translation may move them.
"""

from __future__ import annotations

from PySide6.QtCore import QT_TRANSLATE_NOOP, QCoreApplication, Qt

from changeover.launcher.app.state import Phase, View

CONTEXT = "Launcher"
PLAIN = Qt.TextFormat.PlainText
"""Every label shows text as text: nothing from a server or a feed is rendered as markup."""


def tr(text: str) -> str:
    return QCoreApplication.translate(CONTEXT, text)


def phase_text(phase: Phase, *, first_install: bool = False) -> str:
    if phase is Phase.UPDATING and first_install:
        return tr("Installing…")
    return {
        Phase.CHECKING: tr("Checking for updates…"),
        Phase.NOT_INSTALLED: tr("Not installed yet"),
        Phase.UPDATE_AVAILABLE: tr("Update available"),
        Phase.WAITING: tr("Waiting for the other branch's update to finish…"),
        Phase.UPDATING: tr("Updating…"),
        Phase.VERIFYING: tr("Verifying the game files…"),
        Phase.PAUSED: tr("Paused"),
        Phase.READY: tr("Ready to play"),
        Phase.UPDATE_REQUIRED: tr("Update required"),
        Phase.OFFLINE: tr("Offline"),
        Phase.ERROR: tr("Something went wrong"),
    }[phase]


def size_text(n: float) -> str:
    """Bytes as a player reads them: ``512 B``, ``3.4 MB`` (powers of 1000, like disks)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return tr("estimating time left…")
    s = round(seconds)
    if s < 60:
        return tr("{n} s left").format(n=s)
    if s < 3600:
        return tr("{m} min {s} s left").format(m=s // 60, s=s % 60)
    return tr("{h} h {m} min left").format(h=s // 3600, m=s % 3600 // 60)


def progress_text(v: View) -> str:
    if v.progress_busy:
        return phase_text(v.phase, first_install=v.installed_version is None)
    if v.phase is Phase.PAUSED:
        return tr("Paused at {done} of {total}").format(
            done=size_text(v.done_bytes), total=size_text(v.total_bytes)
        )
    return tr("{done} of {total} · {rate}/s · {eta}").format(
        done=size_text(v.done_bytes),
        total=size_text(v.total_bytes),
        rate=size_text(v.bytes_per_s),
        eta=eta_text(v.eta_s),
    )


def installed_text(v: View) -> str:
    return tr("Installed: {version}").format(version=v.installed_version or tr("nothing yet"))


def available_text(v: View) -> str:
    if v.available_version is None:
        return tr("Available: unknown (server not reached)") if v.phase is Phase.OFFLINE else ""
    if v.download_bytes:
        return tr("Available: {version} — {size} to download").format(
            version=v.available_version, size=size_text(v.download_bytes)
        )
    return tr("Available: {version}").format(version=v.available_version)


def action_text(action: str) -> str:
    return {
        "install": tr("Install"),
        "update": tr("Update"),
        "resume": tr("Resume"),
        "none": "",
    }[action]


# Fixed texts, marked for lupdate here and translated where they are shown, by t().
PLAY = str(QT_TRANSLATE_NOOP("Launcher", "Play"))
PAUSE = str(QT_TRANSLATE_NOOP("Launcher", "Pause"))
CANCEL = str(QT_TRANSLATE_NOOP("Launcher", "Cancel"))
VERIFY = str(QT_TRANSLATE_NOOP("Launcher", "Verify and repair"))
NEWS = str(QT_TRANSLATE_NOOP("Launcher", "News"))
BRANCH = str(QT_TRANSLATE_NOOP("Launcher", "Branch:"))
NEWS_LOADING = str(QT_TRANSLATE_NOOP("Launcher", "Loading news…"))
NEWS_EMPTY = str(QT_TRANSLATE_NOOP("Launcher", "No news yet."))
NEWS_STALE = str(QT_TRANSLATE_NOOP("Launcher", "Showing the last news fetched."))
OFFLINE_PLAY = str(
    QT_TRANSLATE_NOOP(
        "Launcher", "The server cannot be reached: you can play the installed version."
    )
)
OFFLINE_NOTHING = str(
    QT_TRANSLATE_NOOP(
        "Launcher",
        "The server cannot be reached and nothing is installed yet: check your connection.",
    )
)
CANCELLED = str(
    QT_TRANSLATE_NOOP("Launcher", "The update was cancelled; the installed version is as it was.")
)
PAUSED = str(QT_TRANSLATE_NOOP("Launcher", "Paused: what was downloaded is kept."))
REPAIRED = str(QT_TRANSLATE_NOOP("Launcher", "Repaired {n} file(s)."))
VERIFIED = str(QT_TRANSLATE_NOOP("Launcher", "All {n} files are intact."))
UPDATED = str(QT_TRANSLATE_NOOP("Launcher", "Up to date: {version}."))
STARTED = str(QT_TRANSLATE_NOOP("Launcher", "The game is starting."))
ERROR_TITLE = str(QT_TRANSLATE_NOOP("Launcher", "The launcher cannot start"))


def t(text: str) -> str:
    """One of the constants above, translated where it is shown."""
    return tr(text)
