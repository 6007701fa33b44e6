"""Start the app: read ``launcher.toml``, open the window, run Qt's loop.

The config is ``--config PATH``, else ``launcher.toml`` beside the executable (the frozen
app's folder, where a studio ships it), else in the current directory. Anything that stops
the launcher from starting (a missing or wrong config, a missing trust root) is shown in a
window as well as printed: a player who double-clicked has no terminal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PySide6.QtCore import QLocale, QTranslator
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow, QPushButton, QVBoxLayout, QWidget

from changeover.errors import ChangeoverError, InvalidInput
from changeover.launcher.app import texts
from changeover.launcher.app.window import STYLE, LauncherWindow, Options, named
from changeover.launcher.config import LauncherConfig, load

CONFIG_NAME = "launcher.toml"


class ErrorWindow(QMainWindow):
    """Why the launcher cannot start, and a Close button."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message
        self.setWindowTitle(texts.t(texts.ERROR_TITLE))
        self.setStyleSheet(STYLE)
        body = named(QWidget(), "body")
        layout = QVBoxLayout(body)
        layout.setContentsMargins(20, 16, 20, 16)
        layout.addWidget(named(QLabel(texts.t(texts.ERROR_TITLE)), "title"))
        self.text = named(QLabel(message), "error")
        self.text.setWordWrap(True)
        self.text.setTextFormat(texts.PLAIN)
        layout.addWidget(self.text, 1)
        close = QPushButton(texts.tr("Close"))
        close.clicked.connect(self.close)
        layout.addWidget(close)
        self.setCentralWidget(body)
        self.resize(560, 220)


def default_config() -> Path:
    """``launcher.toml`` beside the executable, else in the current directory."""
    if getattr(sys, "frozen", False):
        beside = Path(sys.executable).parent / CONFIG_NAME
    else:
        beside = Path(sys.argv[0]).resolve().parent / CONFIG_NAME
    return beside if beside.exists() else Path.cwd() / CONFIG_NAME


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="changeover-launcher", description="The game's launcher.")
    parser.add_argument("--config", type=Path, help=f"the studio's {CONFIG_NAME}")
    return parser.parse_args(argv)


def read_root(config: LauncherConfig) -> bytes:
    """The pinned trust root the studio ships beside the config.

    Raises:
        InvalidInput: it is missing or unreadable.
    """
    try:
        return config.root.read_bytes()
    except OSError as e:
        raise InvalidInput(
            f"{config.source}: the trust root {config.root} cannot be read"
            f" ({e.strerror or e}); reinstall the launcher"
        ) from None


def install_translation(app: QApplication, config_dir: Path) -> QTranslator | None:
    """``launcher_<locale>.qm`` beside the config, when the studio ships one."""
    translator = QTranslator(app)
    if translator.load(QLocale(), "launcher", "_", str(config_dir)):
        app.installTranslator(translator)
        return translator
    return None


def build(path: Path, options: Options | None = None) -> QMainWindow:
    """The window to show for the config at ``path``: the launcher, or why it cannot start."""
    try:
        config = load(path)
        translator = install_translation(_app(), config.source.parent)
        root = read_root(config)
    except ChangeoverError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return ErrorWindow(e.message)
    base = options or Options()
    window = LauncherWindow(config, Options(**{**base.__dict__, "root": root}))
    window.translator = translator
    return window


def _app() -> QApplication:
    app = QApplication.instance()
    if isinstance(app, QApplication):
        return app
    return QApplication([sys.argv[0] if sys.argv else "changeover-launcher"])


def run(config: Path | None = None) -> int:
    """Open the launcher for ``config`` (else :func:`default_config`) and return the exit
    code when its window closes. ``changeover-launcher`` calls it with the config it chose."""
    app = _app()
    window = build(config or default_config())
    window.show()
    return int(app.exec())


def main(argv: list[str] | None = None) -> int:
    """``python -m changeover.launcher.app [--config PATH]``."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    return run(args.config)
