"""Client versions, as both sides read them: the servers' allocation rules and the launcher.

A client version is one to four dot-separated numbers (``1.4.2``); trailing zeros do not
matter (``1.4 == 1.4.0``). A server version declares the client versions it accepts as an
inclusive range ``client_min .. client_max`` (either bound may be absent). A client image
version's client version is its label when the label is such a number, else its version
number (``of_build``), so a studio that labels its client builds ``1.4.2`` sees the same
string in the launcher, in allocation requests and in the server's declared range.

Pure and portable: the launcher imports it, so it imports nothing of the control plane.
"""

from __future__ import annotations

import re
from typing import Final

from changeover.errors import InvalidInput

CLIENT_VERSION_RE: Final = re.compile(r"\d{1,9}(?:\.\d{1,9}){0,3}")

ClientVersion = tuple[int, ...]


def parse(value: str, what: str = "client version") -> ClientVersion:
    """``"1.4.2"`` as ``(1, 4, 2)``; trailing zeros dropped (``1.4 == 1.4.0``).

    Raises:
        InvalidInput: not one to four dot-separated numbers.
    """
    if not isinstance(value, str) or not CLIENT_VERSION_RE.fullmatch(value):
        raise InvalidInput(f"{what} {value!r} must be 1 to 4 numbers separated by dots, e.g. 1.4.2")
    parts = [int(p) for p in value.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def is_client_version(value: object) -> bool:
    return isinstance(value, str) and CLIENT_VERSION_RE.fullmatch(value) is not None


def accepts(
    client: ClientVersion | None, client_min: ClientVersion | None, client_max: ClientVersion | None
) -> bool:
    """Whether a range ``client_min .. client_max`` (inclusive) takes ``client``; a request
    that names no client version is taken by any range."""
    if client is None:
        return True
    if client_min is not None and client < client_min:
        return False
    return not (client_max is not None and client > client_max)


def of_build(number: int, label: str | None) -> str:
    """The client version of a client image's version: its label when that is a client
    version (``1.4.2``), else its version number (``7``)."""
    if label is not None and is_client_version(label):
        return label
    return str(number)


__all__ = [
    "CLIENT_VERSION_RE",
    "ClientVersion",
    "accepts",
    "is_client_version",
    "of_build",
    "parse",
]
