"""A patch job's client release (seed 002: new clients are released after the servers).

A job may carry ``client_release: {"image", "branch", "version", "compat"}``: a client
image, the branch players' launchers follow, and the client version that goes with the
job's new server builds. The job then

1. when it starts (``DeclareClientRange``, unless ``compat`` is false), gives its server
   versions client ranges where the operator declared none (``default_ranges``): each new
   server version accepts the released client and the old clients the old servers
   accepted; each old server version accepts nothing newer than the client the branch
   points at now. So a client from the future never lands on an old server, with no range
   set by hand;
2. once its servers are done (the job completed: every old instance gone, emptied or
   stopped at its drain deadline), moves the branch to the client version
   (``ReleaseClient``), recorded and applied like any other action: once.

A job that does not complete (failed, rolled back, cancelled, finalized by force) releases
nothing. Pure: ``services`` resolves the names, ``appliers`` writes the rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from changeover.content import client_versions
from changeover.errors import InvalidInput

FIELDS: Final = frozenset({"image", "branch", "version", "compat"})

Range = tuple[str | None, str | None]
"""A declared ``(client_min, client_max)``, inclusive; None = no bound."""


@dataclass(frozen=True)
class ClientRelease:
    """The client release a job carries, its names resolved."""

    image_id: int
    image: str
    branch: str
    version_id: int
    version_number: int
    client_version: str
    """The client version string of ``version_id`` (``client_versions.of_build``)."""
    compat: bool = True
    """Give the job's server versions default client ranges (``default_ranges``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "image": self.image,
            "branch": self.branch,
            "version_id": self.version_id,
            "version_number": self.version_number,
            "client_version": self.client_version,
            "compat": self.compat,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ClientRelease:
        return cls(
            image_id=int(raw["image_id"]),
            image=str(raw["image"]),
            branch=str(raw["branch"]),
            version_id=int(raw["version_id"]),
            version_number=int(raw["version_number"]),
            client_version=str(raw["client_version"]),
            compat=bool(raw.get("compat", True)),
        )


def check_body(raw: object) -> dict[str, Any] | None:
    """The body's ``client_release`` checked for shape: ``None`` (no release) or
    ``{"image": str, "branch": str, "version": str, "compat": bool}``.

    Raises:
        InvalidInput: not an object, an unknown or missing field, a wrong type.
    """
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidInput(
            'client_release must be {"image", "branch", "version"}', field="client_release"
        )
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise InvalidInput(
            f"client_release: unknown field(s) {', '.join(map(str, unknown))}",
            field="client_release",
        )
    out: dict[str, Any] = {}
    for name in ("image", "branch", "version"):
        value = raw.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and name == "version":
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(
                f"client_release.{name} is required (a name)", field=f"client_release.{name}"
            )
        out[name] = value.strip()
    compat = raw.get("compat", True)
    if not isinstance(compat, bool):
        raise InvalidInput(
            "client_release.compat must be true or false", field="client_release.compat"
        )
    out["compat"] = compat
    return out


@dataclass(frozen=True)
class RangeWrite:
    """A client range to declare for a server version that declares none."""

    version_id: int
    client_min: str | None
    client_max: str | None
    why: str


def _parsed(value: str | None) -> client_versions.ClientVersion | None:
    return None if value is None else client_versions.parse(value)


def refuses(declared: Range, client: str) -> bool:
    """Whether a declared range turns ``client`` away."""
    lo, hi = declared
    return not client_versions.accepts(client_versions.parse(client), _parsed(lo), _parsed(hi))


def default_ranges(
    old: Mapping[int, Range | None],
    new: Mapping[int, Range | None],
    released: str,
    current: str | None,
) -> list[RangeWrite]:
    """The ranges a job with a client release declares (module docstring), for the server
    versions that declare none (``None`` in ``old``/``new``; a declared range is the
    operator's and stays as it is).

    ``old``/``new``: the job's old and new server versions (image version id -> declared
    range or None); ``released``: the client version the job releases; ``current``: the
    one the client branch points at now (None: no branch yet).

    - a new server version: ``client_min`` the lowest the old versions accept (none when
      one of them accepts every old client), ``client_max`` the released client;
    - an old server version (that is not also a new one): no ``client_min``,
      ``client_max`` the current client, when there is one and it is older than the
      released one (else bounding it would refuse nothing, or the release itself).
    """
    released_v = client_versions.parse(released)
    mins = [rng[0] if rng is not None else None for rng in old.values()]
    floor = None
    if mins and all(m is not None for m in mins):
        floor = min((m for m in mins if m is not None), key=client_versions.parse)
        if client_versions.parse(floor) > released_v:
            floor = None  # the old servers only took newer clients: keep the release possible
    writes: list[RangeWrite] = []
    for version_id, declared in sorted(new.items()):
        if declared is None:
            writes.append(
                RangeWrite(
                    version_id,
                    floor,
                    released,
                    f"accepts the released client {released}"
                    + (f" and the old clients from {floor}" if floor else " and every older one"),
                )
            )
    if current is not None and client_versions.parse(current) < released_v:
        for version_id, declared in sorted(old.items()):
            if declared is None and version_id not in new:
                writes.append(
                    RangeWrite(
                        version_id,
                        None,
                        current,
                        f"takes no client newer than {current} (the released {released} is"
                        " for the new servers)",
                    )
                )
    return writes


def refusing(new: Mapping[int, Range | None], released: str) -> list[int]:
    """The new server versions whose declared range turns the released client away."""
    return sorted(v for v, rng in new.items() if rng is not None and refuses(rng, released))


__all__ = [
    "FIELDS",
    "ClientRelease",
    "Range",
    "RangeWrite",
    "check_body",
    "default_ranges",
    "refuses",
    "refusing",
]
