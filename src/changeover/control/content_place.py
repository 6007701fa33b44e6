"""Where the content tree lives, agreed on by every replica of one database.

Replicas share the content tree (blobs, manifests, patches, signed metadata): through one
data directory (one machine, or a shared filesystem) or through a bucket. A replica on a
disk of its own with no bucket would serve a tree the others never see, and, starting
fresh, would make signing keys and a root of its own. So the database records the place
of the tree the first replica used (``content_places``, one row), and a replica whose
place differs refuses to start, saying how to fix it, before it writes anything.

A data directory is known by an id made the first time a replica uses it
(``DATA/store/place-id``, outside the public tree); a bucket by its ``s3://`` URL.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import sqlalchemy.exc
from sqlalchemy import Float, String, select
from sqlalchemy.orm import Mapped, mapped_column

from changeover.content.bucket import BucketConfig
from changeover.control.db import Base, Database, now
from changeover.errors import Conflict
from changeover.settings import Settings

log = logging.getLogger("changeover.control")

PLACE_ID = "place-id"
"""The file, in ``DATA/store``, that names a data directory's content tree."""


class ContentPlace(Base):
    """The content tree's place, as the first replica recorded it (one row, id 1)."""

    __tablename__ = "content_places"

    id: Mapped[int] = mapped_column(primary_key=True)
    place: Mapped[str] = mapped_column(String(600))
    recorded_at: Mapped[float] = mapped_column(Float)


def place_of(settings: Settings) -> str:
    """This replica's content tree: its bucket's URL, or its data directory's id (made
    now if the directory has none)."""
    if settings.content_bucket:
        config = BucketConfig.parse(settings.content_bucket, settings.s3_endpoint)
        return f"s3://{config.name}/{config.prefix}"
    marker = settings.data_dir / "store" / PLACE_ID
    return "disk:" + _disk_id(marker)


def _disk_id(marker: Path) -> str:
    try:
        return marker.read_text().strip()
    except FileNotFoundError:
        marker.parent.mkdir(parents=True, exist_ok=True)
        made = uuid.uuid4().hex
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(made + "\n")
        try:
            marker.hardlink_to(tmp)  # fails if another process made one meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return marker.read_text().strip()


def _record(db: Database, mine: str, moved: bool) -> str:
    """The place on record after this replica's turn: ``mine`` when none was recorded,
    or ``moved``; else the recorded one."""
    with db.write() as s:
        row = s.scalar(select(ContentPlace).where(ContentPlace.id == 1).with_for_update())
        if row is None:
            s.add(ContentPlace(id=1, place=mine, recorded_at=now()))
            return mine
        if row.place != mine and moved:
            log.warning(
                "the content tree moved from %s to %s (CHANGEOVER_CONTENT_MOVED)", row.place, mine
            )
            row.place, row.recorded_at = mine, now()
        return row.place


def agree(db: Database, settings: Settings) -> str:
    """Record this replica's content place if none is, or check it against the recorded
    one; ``settings.content_moved`` records it over a different one (the tree was moved
    on purpose). Returns the place.

    Raises:
        Conflict: the database's other replicas use another content tree.
    """
    mine = place_of(settings)
    for attempt in range(2):
        try:
            recorded = _record(db, mine, settings.content_moved)
        except sqlalchemy.exc.IntegrityError:  # another first replica recorded it meanwhile
            if attempt:
                raise
            continue
        if recorded == mine:
            return mine
        break
    here = "bucket " + mine if mine.startswith("s3://") else f"data directory {settings.data_dir}"
    there = "bucket " + recorded if recorded.startswith("s3://") else "another data directory"
    raise Conflict(
        f"this replica's content tree ({here}) is not the one this database's replicas use"
        f" ({there}). Replicas on separate disks must share the content through a bucket"
        " (CHANGEOVER_CONTENT_BUCKET, the same for all) or one data directory on a shared"
        " filesystem (docs/replicas.md). If the tree was moved on purpose (copied into a"
        " bucket, or the data directory restored from a backup), start once with"
        " CHANGEOVER_CONTENT_MOVED=1 to record its new place.",
        recorded=recorded,
        mine=mine,
    )
