"""Replicas of one database agree on where the content tree lives
(``control.content_place``): a replica on a data directory of its own with no bucket
refuses to start, before it makes keys or writes anything, and says how to fix it."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from changeover.control.content_place import agree, place_of
from changeover.control.db import Database
from changeover.errors import Conflict
from changeover.settings import Settings
from tests_helpers import CLI, free_port, start_server, stop_server


def _on(data: Path, **more: object) -> Settings:
    return Settings(data_dir=data, **more)  # type: ignore[arg-type]


def test_one_data_directory_is_agreed_another_is_refused(db: Database, tmp_path: Path) -> None:
    first, second = tmp_path / "m1", tmp_path / "m2"
    place = agree(db, _on(first))
    assert place.startswith("disk:") and agree(db, _on(first)) == place  # again: the same
    with pytest.raises(Conflict) as refused:
        agree(db, _on(second))
    assert "CHANGEOVER_CONTENT_BUCKET" in refused.value.message
    assert "CHANGEOVER_CONTENT_MOVED=1" in refused.value.message
    assert refused.value.facts == {"recorded": place, "mine": place_of(_on(second))}
    # Moved on purpose: the new place is recorded, and now the old one is refused.
    assert agree(db, _on(second, content_moved=True)) == place_of(_on(second))
    with pytest.raises(Conflict):
        agree(db, _on(first))


def test_replicas_on_separate_disks_agree_through_their_bucket(
    db: Database, tmp_path: Path
) -> None:
    bucket = "s3://game-content/live"
    a = agree(db, _on(tmp_path / "m1", content_bucket=bucket))
    assert a == "s3://game-content/live/"
    assert agree(db, _on(tmp_path / "m2", content_bucket=bucket + "/")) == a
    with pytest.raises(Conflict) as refused:
        agree(db, _on(tmp_path / "m3"))  # its disk alone: not where the others' tree is
    assert "bucket s3://game-content/live/" in refused.value.message
    with pytest.raises(Conflict):
        agree(db, _on(tmp_path / "m2", content_bucket="s3://game-content/staging"))


def test_replicas_starting_together_record_one_place(db: Database, tmp_path: Path) -> None:
    """Several first replicas at once, each on its own disk: one place is recorded, the
    one replica that recorded it goes on, every other is refused."""
    outcomes: list[str] = []

    def start(n: int) -> None:
        try:
            agree(db, _on(tmp_path / f"m{n}"))
            outcomes.append("agreed")
        except Conflict:
            outcomes.append("refused")

    threads = [threading.Thread(target=start, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["agreed"] + ["refused"] * 3


def test_a_server_on_a_disk_of_its_own_refuses_to_start(pg_url: str, tmp_path: Path) -> None:
    first = start_server(tmp_path / "m1", pg_url)
    try:
        second = tmp_path / "m2"
        port = free_port()
        run = subprocess.run(
            [*CLI, "server", "--data", str(second), "--database", pg_url, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 5, run.stderr
        assert "is not the one this database's replicas use" in run.stderr, run.stderr
        assert not (second / "keys").exists()  # refused before it made keys of its own
        assert not (second / "store" / "content").exists()
        assert first.process.poll() is None
    finally:
        stop_server(first)
