"""SQLite's write-ahead log is checkpointed by the job runner, not in writers' commits
(``control.db.Database.checkpoint``), on a real SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from changeover.control import db as db_mod
from changeover.control.db import Database


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'c.db'}")
    with database.write() as s:
        s.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, blob BLOB NOT NULL)"))
    yield database
    database.dispose()


def _sizes(path: Path) -> tuple[int, int]:
    """(database file, write-ahead log) sizes in bytes."""
    return path.stat().st_size, Path(f"{path}-wal").stat().st_size


def test_commits_leave_the_log_to_the_checkpointer(db: Database, tmp_path: Path) -> None:
    with db.engine.connect() as c:
        pages = c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert pages == db_mod.SQLITE_AUTOCHECKPOINT_PAGES > 1000
    # 1,500 commits of a 4 KiB row each: past SQLite's default of 1,000 pages, where a
    # committing writer would have checkpointed itself.
    for i in range(1500):
        with db.write() as s:
            s.execute(text("INSERT INTO t (blob) VALUES (:b)"), {"b": bytes([i % 256]) * 4000})
    main, wal = _sizes(tmp_path / "c.db")
    # No commit checkpointed: the log holds every page (a checkpoint restarts it, so it
    # would have stopped near 1,000 pages), the database file none of the rows yet.
    assert wal > 1500 * 4096 and main < 100 * 4096, (main, wal)
    db.checkpoint()
    main, _ = _sizes(tmp_path / "c.db")
    assert main > 1500 * 4000  # copied into the database file
    with db.read() as s:
        assert s.execute(text("SELECT count(*) FROM t")).scalar() == 1500


def test_checkpoint_does_nothing_on_postgresql_urls() -> None:
    database = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        database.checkpoint()  # no connection is even tried
    finally:
        database.dispose()
