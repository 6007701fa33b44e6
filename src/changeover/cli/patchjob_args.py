"""What ``changeover patchjob`` flags mean, as plain functions: parsed and checked before
any request, so a typo is one clear line and nothing is created.

    --build OLD=NEW              {"old": OLD, "new": NEW}
    --email ADDR[:progress,result]   {"email", "progress", "result"} (both when no suffix)
    --start 1900000000 | 2030-01-01T10:00:00Z | +10m      unix seconds, 5 min ahead or more
    --max-run-time 2h            (2, "hours")
    durations                    90 (seconds), 30s, 15m, 2h, 1d (``cli.durations``)
    --max-unavailable 2 | 25%    a count or a share, as the API takes it
    --client-image C --client-version 1.5 [--client-branch production] [--no-client-compat]
                                 {"client_release": {"image", "branch", "version", "compat"}}

``build_body`` merges a ``--file`` spec with the flags (flags win) and checks that the
fields a job needs are there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from changeover.cli import durations
from changeover.control.patchjobs.model import EMAIL_RE
from changeover.control.patchjobs.schedule import LEAD_S
from changeover.control.patchjobs.specs import parse_method
from changeover.errors import InvalidInput

AMOUNT_RE: Final = re.compile(r"\d{1,9}%?")
REQUIRED: Final = (
    ("name", "--name"),
    ("environment", "--environment"),
    ("application", "--application"),
    ("method", "--method"),
    ("builds", "--build OLD=NEW"),
    ("fleets", "--fleet"),
)


def duration_s(flag: str, value: str) -> float:
    """``90``, ``30s``, ``15m``, ``2h``, ``1d`` as seconds (``durations.seconds``).

    Raises:
        InvalidInput: anything else, or a negative or infinite amount.
    """
    return durations.seconds(flag, value)


def run_time(value: str) -> tuple[float, str]:
    """``--max-run-time 2h`` as the API's ``(max_run_time, max_run_time_unit)``."""
    amount, unit = durations.split("--max-run-time", value)
    return (int(amount) if amount.is_integer() else amount), durations.UNIT_NAMES[unit]


def build_pair(value: str) -> dict[str, str]:
    old, sep, new = value.partition("=")
    old, new = old.strip(), new.strip()
    if not sep or not old or not new or "=" in new:
        raise InvalidInput(
            f"--build {value!r} must read OLD=NEW (profile names, e.g. arena-v1=arena-v2)"
        )
    if old == new:
        raise InvalidInput(f"--build {value!r}: the old and new profile are the same")
    return {"old": old, "new": new}


def email_entry(value: str) -> dict[str, Any]:
    """``ops@example.com`` (both reports), ``ops@example.com:progress``, ``…:result`` or
    ``…:progress,result``."""
    address, _, kinds = value.strip().partition(":")
    if not EMAIL_RE.fullmatch(address):
        raise InvalidInput(f"--email {value!r}: {address!r} is not an e-mail address")
    wanted = {k.strip().lower() for k in kinds.split(",") if k.strip()} or {"progress", "result"}
    unknown = sorted(wanted - {"progress", "result"})
    if unknown:
        raise InvalidInput(
            f"--email {value!r}: reports are 'progress' and 'result', not {', '.join(unknown)}"
        )
    return {"email": address, "progress": "progress" in wanted, "result": "result" in wanted}


def start_time(value: str, now: float) -> float:
    """Unix seconds, ISO 8601 (UTC unless it says otherwise) or ``+10m`` from ``now``.

    Raises:
        InvalidInput: none of those, or less than 5 minutes from ``now`` (the API would
            refuse it; leave ``--start`` out to start at once).
    """
    raw = value.strip()
    if raw.startswith("+"):
        at = now + duration_s("--start", raw[1:])
    elif re.fullmatch(r"\d+(\.\d+)?", raw):
        at = float(raw)
    else:
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"--start {value!r}: give unix seconds, an ISO 8601 time "
                "(2030-01-01T10:00:00Z) or +DURATION (+10m)"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        at = parsed.timestamp()
    if at < now + LEAD_S:
        raise InvalidInput(
            f"--start {value!r} is {at - now:.0f} s from now: a scheduled start must be at "
            f"least {LEAD_S / 60:.0f} minutes ahead (leave --start out to start now)",
            field="scheduled_start",
        )
    return at


def amount(flag: str, value: str) -> int | str:
    """A count (``2``) or a share (``25%``), as the rolling knobs take them."""
    v = value.strip()
    if not AMOUNT_RE.fullmatch(v):
        raise InvalidInput(f"{flag} {value!r}: give a count (2) or a percentage (25%)")
    return v if v.endswith("%") else int(v)


def share(flag: str, value: str) -> float:
    """``0.1`` or ``10%`` as a fraction in (0, 1]."""
    v = value.strip()
    try:
        x = float(v[:-1]) / 100 if v.endswith("%") else float(v)
    except ValueError:
        raise InvalidInput(
            f"{flag} {value!r}: give a fraction (0.1) or a percentage (10%)"
        ) from None
    if not 0 < x <= 1:
        raise InvalidInput(f"{flag} {value!r} must be more than 0 and at most 100%")
    return x


def method(value: str) -> int:
    """A method id or name, checked here so a typo lists the choices."""
    return int(parse_method(value))


def merge_knob(body: dict[str, Any], group: str, key: str, value: object) -> None:
    if value is None:
        return
    current = body.get(group)
    merged = dict(current) if isinstance(current, Mapping) else {}
    merged[key] = value
    body[group] = merged


def build_body(
    base: Mapping[str, Any], flags: Mapping[str, Any], *, require: bool
) -> dict[str, Any]:
    """``base`` (a ``--file``) overridden by every flag that was given (not None).

    Raises:
        InvalidInput: ``require`` and a field a job needs is missing; the message names
            the flags to give.
    """
    body = dict(base)
    for key, value in flags.items():
        if value is not None:
            body[key] = value
    if require:
        missing = [flag for key, flag in REQUIRED if not body.get(key)]
        if missing:
            raise InvalidInput(
                f"missing {', '.join(missing)} (give them as flags or in --file)",
                missing=missing,
            )
    return body


def merge_client_release(
    body: dict[str, Any],
    image: str | None,
    branch: str | None,
    version: str | None,
    compat: bool | None,
) -> None:
    """The ``--client-*`` flags over ``body``'s ``client_release`` (from ``--file``).

    Raises:
        InvalidInput: a release without its image or version (the branch defaults to
            ``production``).
    """
    given = {
        k: v
        for k, v in (("image", image), ("branch", branch), ("version", version), ("compat", compat))
        if v is not None
    }
    if not given:
        return
    current = body.get("client_release")
    merged = dict(current) if isinstance(current, Mapping) else {}
    merged.update(given)
    merged.setdefault("branch", "production")
    missing = [f"--client-{k}" for k in ("image", "version") if not merged.get(k)]
    if missing:
        raise InvalidInput(
            f"a client release needs {' and '.join(missing)} too"
            " (--client-image NAME --client-version VERSION [--client-branch BRANCH])",
            missing=missing,
        )
    body["client_release"] = merged


def repeated(values: Sequence[str] | None) -> list[str] | None:
    """A repeatable flag: None when not given (so ``update`` leaves the field alone)."""
    return list(values) if values else None


__all__ = [
    "amount",
    "build_body",
    "build_pair",
    "duration_s",
    "email_entry",
    "merge_client_release",
    "merge_knob",
    "method",
    "repeated",
    "run_time",
    "share",
    "start_time",
]
