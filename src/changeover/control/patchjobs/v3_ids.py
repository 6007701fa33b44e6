"""Seed 001's string ids for Changeover's environments, applications, builds and fleets.

The ``/v3`` facade (``v3_views``) names things by id, as seed 001's API does
(``"applicationId": "8939460394116420757"``); Changeover names them by name and numbers
them with its own row ids. A thing's v3 id is:

- the id registered for it (``register``): a studio moving from that API keeps the ids its
  scripts already hold; a registered id is a number from 2**31 to 2**63 - 1, so it never
  equals a row id (PostgreSQL's ``integer`` ids stop below 2**31);
- otherwise its row id, as a string.

``resolve`` reads an id back (registered first, then row id); ``public_ids`` writes them.
A build of seed 001 (``applicationBuild``) is a profile here (docs/patchjobs.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from sqlalchemy import BigInteger, Float, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from changeover.control.db import Base
from changeover.control.fleet.models import Application, Environment, Fleet, Profile
from changeover.errors import Conflict, InvalidInput, NotFound

Table = type[Environment] | type[Application] | type[Profile] | type[Fleet]
KINDS: Final[dict[str, Table]] = {
    "deploymentEnvironment": Environment,
    "application": Application,
    "applicationBuild": Profile,
    "fleet": Fleet,
}
"""A kind of v3 id -> the table of the things it names."""
MIN_REGISTERED: Final = 2**31
MAX_ID: Final = 2**63 - 1


class V3Id(Base):
    __tablename__ = "v3_ids"
    __table_args__ = (UniqueConstraint("kind", "local_id", name="uq_v3_ids_local"),)

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    public_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    local_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)


def _table(kind: str) -> Table:
    try:
        return KINDS[kind]
    except KeyError:
        raise InvalidInput(
            f"unknown kind {kind!r}: one of {', '.join(KINDS)}", field="kind"
        ) from None


def parse_id(value: str, field: str) -> int:
    """A v3 id as the number it is.

    Raises:
        InvalidInput: not 1 to 19 digits, or past 2**63 - 1 (the message names ``field``).
    """
    if not (value.isascii() and value.isdigit() and 1 <= len(value) <= 19):
        raise InvalidInput(f"{field} must be a string of digits, got {value!r}", field=field)
    number = int(value)
    if not 1 <= number <= MAX_ID:
        raise InvalidInput(f"{field} must be from 1 to {MAX_ID}, got {value}", field=field)
    return number


def resolve(s: Session, kind: str, value: str, field: str) -> int:
    """The row id a v3 id names.

    Raises:
        InvalidInput: not an id (``parse_id``). NotFound: nothing of ``kind`` has it.
    """
    number = parse_id(value, field)
    table = _table(kind)
    local = s.scalar(select(V3Id.local_id).where(V3Id.kind == kind, V3Id.public_id == number))
    if local is None and number < MIN_REGISTERED and s.get(table, number) is not None:
        local = number
    if local is None:
        raise NotFound(f"{field}: no {kind} has id {value}", field=field, id=value)
    return local


def name_of(s: Session, kind: str, local_id: int) -> str:
    """The name of the ``kind`` with row id ``local_id`` (``resolve`` found it)."""
    table = _table(kind)
    return str(s.scalars(select(table.name).where(table.id == local_id)).one())


def public_ids(s: Session, kind: str, local_ids: Iterable[int]) -> dict[int, str]:
    """Each row id's v3 id (its registered one, else itself)."""
    wanted = set(local_ids)
    out = {i: str(i) for i in wanted}
    if wanted:
        rows = s.execute(
            select(V3Id.local_id, V3Id.public_id).where(
                V3Id.kind == kind, V3Id.local_id.in_(wanted)
            )
        )
        out.update({local: str(public) for local, public in rows})
    return out


def register(s: Session, kind: str, public_id: str, name: str, t: float) -> dict[str, object]:
    """Give the ``kind`` named ``name`` the v3 id ``public_id`` (replacing its previous one).

    Raises:
        InvalidInput: an unknown kind, an id that is not a number from 2**31 to 2**63 - 1.
        NotFound: no such thing. Conflict: the id names something else already.
    """
    table = _table(kind)
    number = parse_id(public_id, "id")
    if number < MIN_REGISTERED:
        raise InvalidInput(
            f"id: a registered id is at least {MIN_REGISTERED} (below that it could be a"
            f" row id), got {public_id}",
            field="id",
        )
    local: int | None = s.scalar(select(table.id).where(table.name == name))
    if local is None:
        raise NotFound(f"no {kind} is named {name!r}", field="name", name=name)
    taken = s.get(V3Id, (kind, number))
    if taken is not None and taken.local_id != local:
        raise Conflict(
            f"{kind} id {public_id} is already another {kind}'s", kind=kind, id=public_id
        )
    current = s.scalar(select(V3Id).where(V3Id.kind == kind, V3Id.local_id == local))
    if current is not None and current.public_id != number:
        s.delete(current)
        s.flush()
    if taken is None:
        s.add(V3Id(kind=kind, public_id=number, local_id=local, created_at=t))
        s.flush()
    return {"kind": kind, "id": public_id, "name": name, "local_id": local}


def listing(s: Session) -> list[dict[str, object]]:
    """Every registered id, by kind and id."""
    out: list[dict[str, object]] = []
    for kind, table in KINDS.items():
        rows = s.execute(
            select(V3Id.public_id, table.name, table.id)
            .join(table, table.id == V3Id.local_id)
            .where(V3Id.kind == kind)
            .order_by(V3Id.public_id)
        )
        out.extend(
            {"kind": kind, "id": str(public), "name": name, "local_id": local}
            for public, name, local in rows
        )
    return out


__all__ = [
    "KINDS",
    "V3Id",
    "listing",
    "name_of",
    "parse_id",
    "public_ids",
    "register",
    "resolve",
]
