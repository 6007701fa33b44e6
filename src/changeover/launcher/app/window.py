"""The launcher's window: renders :mod:`state`'s View and forwards clicks to the engine.

Each branch of ``launcher.toml`` has its own install directory (side by side, one shared
cache) and its own :class:`BranchState`; the selector chooses which one the window shows,
and a branch keeps updating while another is shown. Every engine call runs on
:class:`Jobs`' workers; their callbacks, on this thread, replace the branch's state and
re-render. A ``QTimer`` checks every branch for updates while the window is open.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from PySide6.QtCore import Qt, QTimer, QTranslator, QUrl
from PySide6.QtGui import QCloseEvent, QDesktopServices, QFont, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from changeover.errors import ChangeoverError, Interrupted, NotFound, RemoteError
from changeover.launcher import compat
from changeover.launcher.app import texts
from changeover.launcher.app.jobs import Jobs
from changeover.launcher.app.sources import News, NewsSource, default_news, start_game
from changeover.launcher.app.state import BranchState, Phase, View, version_text, view
from changeover.launcher.app.timings import Milestones
from changeover.launcher.config import LauncherConfig
from changeover.launcher.engine import Available, Control, Engine, Installed, ProgressEvent
from changeover.launcher.install import VerifyReport
from changeover.launcher.sync import SyncReport

STYLE = """
QMainWindow { background: #1d2330; }
QWidget#body { background: #1d2330; color: #e6e9ef; }
QLabel { color: #e6e9ef; }
QLabel#title { font-size: 22px; font-weight: bold; }
QLabel#phase { font-size: 16px; font-weight: bold; }
QLabel#error { color: #ff8a80; }
QLabel#notice { color: #b9f6ca; }
QPushButton { background: #35405a; color: #e6e9ef; border: 0; padding: 7px 14px;
              border-radius: 4px; }
QPushButton:disabled { background: #2a3144; color: #6b7387; }
QPushButton#play { background: #2e9d5a; font-size: 16px; font-weight: bold; padding: 10px 30px; }
QPushButton#play:disabled { background: #2a3144; color: #6b7387; }
QPushButton#action { background: #2f6fbf; font-weight: bold; }
QComboBox { background: #2a3144; color: #e6e9ef; padding: 4px 8px; }
QProgressBar { background: #2a3144; border: 0; border-radius: 4px; height: 14px;
               color: transparent; }
QProgressBar::chunk { background: #2f6fbf; border-radius: 4px; }
QTreeWidget { background: #232a3a; color: #e6e9ef; border: 0; }
QHeaderView::section { background: #2a3144; color: #aab1c3; border: 0; padding: 4px; }
"""


W = TypeVar("W", bound=QWidget)


def named(widget: W, name: str) -> W:
    """``widget`` with an object name, which the style sheet and tests address."""
    widget.setObjectName(name)
    return widget


def refusal(answer: compat.CompatAnswer) -> str | None:
    """What a player reads when the live servers refuse the installed client, else None."""
    if answer.status != "update_required":
        return None
    text = texts.tr("The servers no longer accept version {version}: update before playing.")
    text = text.format(version=answer.installed)
    if answer.client_min:
        text += " " + texts.tr("They need {minimum} or newer.").format(minimum=answer.client_min)
    return text


def message_of(error: BaseException) -> str:
    """One clear line for a player; the engine's errors already say what to do."""
    if isinstance(error, ChangeoverError):
        return error.message
    if isinstance(error, OSError):
        # The engine's sync words disk errors itself; a check or a read may still meet a
        # raw one (a full disk refuses the signed metadata's cache too).
        what = error.strerror or str(error)
        return f"{what} ({error.filename})" if error.filename else what
    return f"unexpected error: {error!r}"


@dataclass(frozen=True)
class Options:
    """How a window runs; the defaults are a player's, tests change a few."""

    root: bytes | None = None
    """The pinned trust root shipped with the launcher (``root`` in launcher.toml)."""
    news: NewsSource = default_news
    check_interval_s: float = 600.0
    engine_options: dict[str, Any] = field(default_factory=dict)
    open_url: Callable[[str], object] | None = None
    platform: str | None = None


class LauncherWindow(QMainWindow):
    def __init__(self, config: LauncherConfig, options: Options | None = None) -> None:
        super().__init__()
        self.config = config
        self.options = options or Options()
        self.jobs = Jobs(self)
        self.states: dict[str, BranchState] = {b.name: BranchState() for b in config.branches}
        self.controls: dict[str, Control] = {}
        self.games: list[subprocess.Popen[bytes]] = []
        self.news: News | None = None
        self.translator: QTranslator | None = None
        """The studio's translation in use, if any (``run`` installs it)."""
        self.reports: dict[str, SyncReport] = {}
        """The last finished sync of each branch (what it downloaded, for the player's log)."""
        self.milestones = Milestones.from_environment(self)
        self._build()
        self.timer = QTimer(self)
        self.timer.setInterval(max(1, int(self.options.check_interval_s * 1000)))
        self.timer.timeout.connect(self.check_all)
        self.show_state()
        for name in self.states:
            self.refresh_installed(name, then_check=True)
        self.load_news()
        self.timer.start()

    # -- layout ------------------------------------------------------------------------

    def _build(self) -> None:
        self.setWindowTitle(self.config.title)
        self.setStyleSheet(STYLE)
        body = named(QWidget(), "body")
        outer = QVBoxLayout(body)
        outer.setContentsMargins(20, 16, 20, 16)
        outer.setSpacing(10)

        header = QHBoxLayout()
        self.logo = QLabel()
        if self.config.logo is not None and self.config.logo.is_file():
            pixmap = QPixmap(str(self.config.logo))
            if not pixmap.isNull():
                self.logo.setPixmap(
                    pixmap.scaled(
                        56,
                        56,
                        Qt.AspectRatioMode.KeepAspectRatio,
                        Qt.TransformationMode.SmoothTransformation,
                    )
                )
        header.addWidget(self.logo)
        self.title = named(QLabel(self.config.title), "title")
        header.addWidget(self.title, 1)
        header.addWidget(QLabel(texts.t(texts.BRANCH)))
        self.branch_box = QComboBox()
        for b in self.config.branches:
            self.branch_box.addItem(b.title, b.name)
        self.branch_box.currentIndexChanged.connect(lambda _i: self.show_state())
        header.addWidget(self.branch_box)
        outer.addLayout(header)
        self._build_status(outer)
        self._build_buttons(outer)
        self._build_news(outer)
        self.setCentralWidget(body)
        self.resize(760, 540)

    def _build_status(self, outer: QVBoxLayout) -> None:
        self.phase_label = named(QLabel(), "phase")
        outer.addWidget(self.phase_label)
        versions = QHBoxLayout()
        self.installed_label = QLabel()
        self.available_label = QLabel()
        versions.addWidget(self.installed_label)
        versions.addSpacing(24)
        versions.addWidget(self.available_label, 1)
        outer.addLayout(versions)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        outer.addWidget(self.progress)
        self.progress_label = QLabel()
        outer.addWidget(self.progress_label)

    def _build_buttons(self, outer: QVBoxLayout) -> None:
        buttons = QHBoxLayout()
        self.play_button = named(QPushButton(texts.t(texts.PLAY)), "play")
        self.play_button.clicked.connect(self.play)
        self.action_button = named(QPushButton(), "action")
        self.action_button.clicked.connect(self.start_sync)
        self.pause_button = QPushButton(texts.t(texts.PAUSE))
        self.pause_button.clicked.connect(self.pause)
        self.cancel_button = QPushButton(texts.t(texts.CANCEL))
        self.cancel_button.clicked.connect(self.cancel)
        self.verify_button = QPushButton(texts.t(texts.VERIFY))
        self.verify_button.clicked.connect(self.verify)
        buttons.addWidget(self.play_button)
        buttons.addWidget(self.action_button)
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.verify_button)
        outer.addLayout(buttons)

        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.setTextFormat(Qt.TextFormat.PlainText)
        outer.addWidget(self.message_label)

    def _build_news(self, outer: QVBoxLayout) -> None:
        news_title = named(QLabel(texts.t(texts.NEWS)), "phase")
        outer.addWidget(news_title)
        self.news_label = QLabel(texts.t(texts.NEWS_LOADING))
        self.news_label.setWordWrap(True)
        self.news_label.setTextFormat(Qt.TextFormat.PlainText)
        outer.addWidget(self.news_label)
        self.news_list = QTreeWidget()
        self.news_list.setColumnCount(2)
        self.news_list.setHeaderLabels([texts.tr("Date"), texts.tr("Title")])
        self.news_list.setRootIsDecorated(False)
        self.news_list.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.news_list.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.news_list.itemClicked.connect(self._news_clicked)
        outer.addWidget(self.news_list, 1)

    # -- what the window shows ---------------------------------------------------------

    @property
    def branch(self) -> str:
        return str(self.branch_box.currentData())

    def select_branch(self, name: str) -> None:
        self.branch_box.setCurrentIndex(self.branch_box.findData(name))

    def current_view(self) -> View:
        return view(self.states[self.branch])

    def show_state(self) -> None:
        v = self.current_view()
        self.phase_label.setText(
            texts.phase_text(v.phase, first_install=v.installed_version is None)
        )
        self.installed_label.setText(texts.installed_text(v))
        self.available_label.setText(texts.available_text(v))
        self.progress.setVisible(v.progress_visible)
        self.progress_label.setVisible(v.progress_visible)
        if v.progress_busy:
            self.progress.setRange(0, 0)  # indeterminate: no total yet
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(v.progress_permille)
        self.progress_label.setText(texts.progress_text(v))
        self.play_button.setEnabled(v.play_enabled)
        # A disabled Install/Update says nothing a phase does not: it is hidden instead.
        self.action_button.setVisible(v.action != "none" and v.action_enabled)
        self.action_button.setText(texts.action_text(v.action))
        self.action_button.setEnabled(v.action_enabled)
        self.pause_button.setVisible(v.pause_enabled)
        self.cancel_button.setVisible(v.cancel_enabled)
        self.verify_button.setEnabled(v.verify_enabled)
        self._render_message(v)
        if v.phase is Phase.READY and v.play_enabled:
            self.milestones.ready_to_play()

    def _render_message(self, v: View) -> None:
        message = v.message or ""
        if v.phase is Phase.OFFLINE:
            hint = texts.t(texts.OFFLINE_PLAY if v.play_enabled else texts.OFFLINE_NOTHING)
            message = f"{hint}\n{message}" if message else hint
        self.message_label.setObjectName("error" if v.message_is_error else "notice")
        self.message_label.setStyleSheet("")  # re-applies the style for the new name
        self.message_label.setText(message)
        self.message_label.setVisible(bool(message))

    def _set(self, branch: str, state: BranchState) -> None:
        self.states[branch] = state
        if branch == self.branch:
            self.show_state()

    # -- engine calls, on workers ------------------------------------------------------

    def engine(self, branch: str) -> Engine:
        return Engine(
            self.config.content_url,
            self.config.install_path(branch),
            self.config.image,
            branch,
            root=self.options.root,
            **self.options.engine_options,
        )

    def refresh_installed(self, branch: str, *, then_check: bool = False) -> None:
        engine = self.engine(branch)

        def done(installed: Installed | None) -> None:
            self._set(branch, self.states[branch].with_installed(installed))
            if then_check:
                self.check(branch)

        def failed(error: BaseException) -> None:
            self._set(
                branch, self.states[branch].with_installed(None).job_failed(message_of(error))
            )

        self.jobs.start(lambda _on: engine.installed(), done, failed)

    def check_all(self) -> None:
        for name in self.states:
            self.check(name)

    def check(self, branch: str) -> None:
        state = self.states[branch]
        if state.checking or state.job is not None:
            return
        engine = self.engine(branch)
        self._set(branch, state.check_started())

        def work(_on: object) -> tuple[Available, str | None]:
            available = engine.check()
            return available, refusal(compat.check(engine))  # never raises

        def done(result: tuple[Available, str | None]) -> None:
            self._set(branch, self.states[branch].check_succeeded(*result))

        def failed(error: BaseException) -> None:
            # Offline only when the server could not be reached: a server that answered
            # (HTTP 404 at a wrong content URL) is a problem of the config, shown as one.
            unreachable = isinstance(error, RemoteError) and "status" not in error.facts
            if isinstance(error, NotFound):
                message = texts.tr("The branch {branch} is not published on the server ({why})")
                text = message.format(branch=branch, why=message_of(error))
            else:
                text = message_of(error)
            self._set(branch, self.states[branch].check_failed(text, unreachable=unreachable))

        self.jobs.start(work, done, failed, serial=True)

    def start_sync(self) -> None:
        branch = self.branch
        state = self.states[branch]
        if state.job is not None:
            return
        engine = self.engine(branch)
        control = Control()
        self.controls[branch] = control
        self._set(branch, state.job_started("sync", waiting=self._writing(branch)))

        def done(report: SyncReport) -> None:
            self.reports[branch] = report
            notice = texts.t(texts.UPDATED).format(
                version=version_text(report.version, report.label)
            )
            self._set(branch, self.states[branch].job_succeeded(notice))
            self.refresh_installed(branch, then_check=True)

        self.jobs.start(
            lambda on_event: engine.sync(on_event, control),
            done,
            lambda e: self._job_failed(branch, e),
            lambda event: self._progress(branch, event),
            serial=True,
        )

    def verify(self) -> None:
        branch = self.branch
        state = self.states[branch]
        if state.job is not None:
            return
        engine = self.engine(branch)
        control = Control()
        self.controls[branch] = control
        self._set(branch, state.job_started("repair", waiting=self._writing(branch)))

        def work(on_event: Callable[[ProgressEvent], None]) -> VerifyReport:
            # Hashing needs no server: an intact install is confirmed offline too. Only a
            # damaged one goes on to repair, which fetches what is missing.
            found = engine.verify()
            if not found.clean:
                engine.repair(on_event, control)
            return found

        def done(found: VerifyReport) -> None:
            if found.clean:
                notice = texts.t(texts.VERIFIED).format(n=found.ok)
            else:
                fixed = len(found.missing) + len(found.modified) + len(found.extra)
                notice = texts.t(texts.REPAIRED).format(n=fixed)
            self._set(branch, self.states[branch].job_succeeded(notice))
            self.refresh_installed(branch)

        self.jobs.start(
            work,
            done,
            lambda e: self._job_failed(branch, e),
            lambda event: self._progress(branch, event),
            serial=True,
        )

    def _writing(self, branch: str) -> bool:
        """Another branch's sync or repair holds the shared cache (this one will queue)."""
        return any(s.job in ("sync", "repair") for b, s in self.states.items() if b != branch)

    def _progress(self, branch: str, event: ProgressEvent) -> None:
        if self.states[branch].job is not None:
            self._set(branch, self.states[branch].job_progress(event))

    def _job_failed(self, branch: str, error: BaseException) -> None:
        state = self.states[branch]
        if isinstance(error, Interrupted) and error.facts.get("reason") == "paused":
            self._set(branch, state.job_paused())
        elif isinstance(error, Interrupted):
            self._set(branch, state.job_cancelled(texts.t(texts.CANCELLED)))
        else:
            self._set(branch, state.job_failed(message_of(error)))
        self.refresh_installed(branch)

    def pause(self) -> None:
        control = self.controls.get(self.branch)
        if control is not None and self.states[self.branch].job == "sync":
            control.pause()

    def cancel(self) -> None:
        branch = self.branch
        state = self.states[branch]
        control = self.controls.get(branch)
        if state.job is not None and control is not None:
            control.cancel()
        elif state.paused:
            self._set(branch, state.job_cancelled(texts.t(texts.CANCELLED)))

    def play(self) -> None:
        branch = self.branch
        if not self.current_view().play_enabled:
            return
        try:
            command = self.config.command(self.options.platform)
            self.games.append(start_game(self.config.install_path(branch), command))
        except ChangeoverError as e:
            self._set(branch, self.states[branch].job_failed(e.message))
            return
        self._set(branch, self.states[branch].job_succeeded(texts.t(texts.STARTED)))

    # -- news --------------------------------------------------------------------------

    def load_news(self) -> None:
        url = self.config.news_url
        if url is None:
            self.show_news(News(message=texts.t(texts.NEWS_EMPTY)))
            return
        source = self.options.news
        cache = self.config.install_dir / ".changeover" / "news"

        def failed(error: BaseException) -> None:
            why = message_of(error)
            self.show_news(
                News(message=texts.tr("The news cannot be fetched: {why}").format(why=why))
            )

        self.jobs.start(lambda _on: source(url, cache), self.show_news, failed)

    def show_news(self, news: News) -> None:
        self.news = news
        self.news_list.clear()
        for item in news.items:
            row = QTreeWidgetItem([item.date, item.title])
            row.setData(1, Qt.ItemDataRole.UserRole, item.link)
            if item.link:
                row.setToolTip(1, item.link)
                font = QFont(row.font(1))
                font.setUnderline(True)
                row.setFont(1, font)
            self.news_list.addTopLevelItem(row)
        if news.stale and not news.message:
            text = texts.t(texts.NEWS_STALE)
        elif news.message:  # the news module's words say why (and since when) it is stale
            text = news.message
        else:
            text = "" if news.items else texts.t(texts.NEWS_EMPTY)
        self.news_label.setText(text)
        self.news_label.setVisible(bool(text))

    def _news_clicked(self, row: QTreeWidgetItem, _column: int) -> None:
        link = row.data(1, Qt.ItemDataRole.UserRole)
        if link:
            self.open_link(str(link))

    def open_link(self, link: str) -> None:
        if self.options.open_url is not None:
            self.options.open_url(link)
        else:
            QDesktopServices.openUrl(QUrl(link))

    # -- closing -----------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 — Qt's name
        """Stop checking, pause running updates (they resume next time), let workers end."""
        self.timer.stop()
        for control in self.controls.values():
            control.pause()
        self.jobs.close(15_000)
        super().closeEvent(event)
