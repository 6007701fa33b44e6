"""Whether the servers still accept the installed client (seed 002, the launcher's side).

The control plane publishes, signed with the content, ``compat/<image>/<branch>.json`` for
each client branch a patch job releases (``control.patchjobs.client_compat``): the client
ranges the live servers of that job's fleets declare::

    {"image": "arena-client", "branch": "production",
     "accepts": [{"client_min": "1.2", "client_max": "1.5"}, …],
     "client_min": "1.2"}            # the lowest client any live server accepts, or null

``check(engine)`` reads it for the engine's image and branch and compares the installed
build's client version (``client_versions.of_build``: its label when that is a version
such as 1.4.2, else its number):

    ok                the installed client is accepted by at least one live server
    update_required   every live server refuses it as too old: update before playing
    unknown           nothing installed, the server cannot be reached, nothing published
                      for this branch, no live server, or the client is newer than every
                      server (the servers are not updated yet)

Imports nothing of the control plane; the engine is only a type here (its own imports are
the engine's business), so this module stays importable anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from changeover.content import client_versions
from changeover.errors import ChangeoverError, InvalidInput, NotFound, UntrustedMetadata

if TYPE_CHECKING:
    from changeover.launcher.engine import Engine

Status = Literal["ok", "update_required", "unknown"]
MAX_RANGES: Final = 1000


def compat_path(image: str, branch: str) -> str:
    return f"compat/{image}/{branch}.json"


@dataclass(frozen=True)
class CompatAnswer:
    status: Status
    message: str
    """In a player's words."""
    installed: str | None = None
    """The installed client version, when there is one."""
    client_min: str | None = None
    """The lowest client version a live server accepts (None: unknown or no bound)."""

    @property
    def label(self) -> str:
        """How a status line shows it: ``ok``, ``update required``, ``unknown``."""
        return self.status.replace("_", " ")


Range = tuple[client_versions.ClientVersion | None, client_versions.ClientVersion | None]


def parse_document(raw: bytes) -> tuple[list[Range], str | None]:
    """The ranges and ``client_min`` of a published compat document.

    Raises:
        UntrustedMetadata: not the document described in the module docstring.
    """
    try:
        doc = json.loads(raw)
        accepts = doc["accepts"]
        if not isinstance(accepts, list) or len(accepts) > MAX_RANGES:
            raise InvalidInput("accepts must be a list")
        ranges: list[Range] = []
        for item in accepts:
            lo, hi = item["client_min"], item["client_max"]
            ranges.append(
                (
                    None if lo is None else client_versions.parse(lo),
                    None if hi is None else client_versions.parse(hi),
                )
            )
        floor = doc.get("client_min")
        if floor is not None:
            client_versions.parse(floor)
    except (ValueError, KeyError, TypeError, InvalidInput) as e:
        raise UntrustedMetadata(f"the servers' client compatibility is malformed: {e}") from e
    return ranges, floor


def answer(installed: str, ranges: Sequence[Range], client_min: str | None) -> CompatAnswer:
    """The pure rule (module docstring) for an installed client version."""
    mine = client_versions.parse(installed)
    if not ranges:
        return CompatAnswer(
            "unknown",
            f"no server is running for this branch: cannot tell whether {installed} is accepted",
            installed,
            client_min,
        )
    if any(client_versions.accepts(mine, lo, hi) for lo, hi in ranges):
        return CompatAnswer("ok", f"the servers accept version {installed}", installed, client_min)
    if any(lo is not None and mine < lo for lo, _ in ranges):
        need = f" (they need {client_min} or newer)" if client_min else ""
        return CompatAnswer(
            "update_required",
            f"update required: the servers no longer accept version {installed}{need}",
            installed,
            client_min,
        )
    return CompatAnswer(
        "unknown",
        f"the servers do not accept version {installed} yet (it is newer than they are);"
        " try again once they are updated",
        installed,
        client_min,
    )


def check(engine: Engine) -> CompatAnswer:
    """Whether the live servers accept what ``engine`` has installed (module docstring).
    Never raises for a remote problem: that is an ``unknown`` answer saying why."""
    installed = engine.installed()
    if installed is None:
        return CompatAnswer("unknown", "nothing is installed yet")
    mine = client_versions.of_build(installed.version, installed.label)
    path = compat_path(engine.image, engine.branch)
    try:
        raw = engine.fetch_signed(
            path, what=f"the servers' client compatibility for {engine.image}/{engine.branch}"
        )
        ranges, floor = parse_document(raw)
    except NotFound:
        return CompatAnswer(
            "unknown",
            f"the servers publish no client compatibility for {engine.image}/{engine.branch}",
            mine,
        )
    except ChangeoverError as e:  # offline, or refused metadata: say so, do not fail
        return CompatAnswer("unknown", f"cannot check with the servers: {e}", mine)
    return answer(mine, ranges, floor)


def as_dict(a: CompatAnswer) -> Mapping[str, Any]:
    return {
        "status": a.status,
        "message": a.message,
        "installed": a.installed,
        "client_min": a.client_min,
    }


__all__ = [
    "CompatAnswer",
    "Status",
    "answer",
    "as_dict",
    "check",
    "compat_path",
    "parse_document",
]
