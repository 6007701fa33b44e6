"""A patch job's stored spec: the submitted body with names resolved to ids, as JSON, and
the ``JobSpec`` the planners read, built from it.

Pure (no database): ``services`` resolves environment, application, profile and fleet
names to ids and hands the rest of the body here. The stored form keeps every field the
API shows back (``comments``, ``max_run_time`` with its unit, the e-mail flags), so a
``GET`` returns what was submitted, normalised::

    {"name", "method", "builds": [[old, new], …], "fleet_ids": [...], "stop": {...},
     "scheduled_start", "max_run_time", "max_run_time_unit", "max_run_time_s",
     "rolling": {...}, "drain": {...}, "canary": {...}, "ab": {...},
     "failure_threshold", "steps": [...], "emails": [{"email", "progress", "result"}],
     "profiles": {"<profile id>": {"stop_timeout_s", "state"}},
     "client_release": {"image_id", "image", "branch", "version_id", "version_number",
                        "client_version", "compat"}}     (only when the job carries one)

``profiles`` holds what the planners need of each build's profile (``ProfileTerms``),
taken when the job is submitted or edited (profiles never change); a job stored without
it counts every profile with the defaults (30 s, instance state).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any, Final, TypeVar

from changeover.control.patchjobs.client_release import ClientRelease
from changeover.control.patchjobs.client_release import check_body as check_release
from changeover.control.patchjobs.knobs import (
    ABKnobs,
    CanaryKnobs,
    DrainPolicy,
    RollingKnobs,
    StopPolicy,
)
from changeover.control.patchjobs.model import BuildPair, JobSpec, ProfileTerms
from changeover.control.patchjobs.states import Method
from changeover.control.patchjobs.steps import parse_steps
from changeover.errors import InvalidInput
from changeover.runspec import RunSpec

METHOD_ALIASES: Final[Mapping[str, Method]] = {
    "forced": Method.FORCED,
    "rolling": Method.ROLLING,
    "ab": Method.AB,
    "a/b": Method.AB,
    "bleed-off": Method.BLEED_OFF,
    "bleedoff": Method.BLEED_OFF,
    "canary": Method.CANARY,
    "custom": Method.CUSTOM,
    **{m.label.lower(): m for m in Method},
}
UNITS: Final[tuple[tuple[str, float], ...]] = (
    ("seconds", 1.0),
    ("minutes", 60.0),
    ("hours", 3600.0),
    ("days", 86400.0),
)
STOP_METHODS: Final[tuple[tuple[int, str, str], ...]] = (
    (0, "Hard kill", "SIGKILL"),
    (1, "Graceful (SIGTERM)", "SIGTERM"),
    (2, "Graceful (SIGINT)", "SIGINT"),
    (3, "Graceful (SIGQUIT)", "SIGQUIT"),
    (4, "Graceful (SIGHUP)", "SIGHUP"),
    (5, "Graceful (SIGUSR1)", "SIGUSR1"),
    (6, "Graceful (SIGUSR2)", "SIGUSR2"),
)
"""Seed 001's stop methods: id, name, signal."""
MAX_COMMENTS: Final = 10_000
BODY_FIELDS: Final = frozenset(
    {
        "name",
        "environment",
        "application",
        "method",
        "builds",
        "fleets",
        "stop",
        "comments",
        "scheduled_start",
        "max_run_time",
        "max_run_time_unit",
        "rolling",
        "drain",
        "canary",
        "ab",
        "failure_threshold",
        "steps",
        "emails",
        "client_release",
    }
)
"""The fields of a create body."""
MAX_EMAILS: Final = 50
MAX_BUILDS: Final = 50
MAX_FLEETS: Final = 200

T = TypeVar("T")


def parse_method(value: object) -> Method:
    """A method by id (1..6) or name (``"bleed-off"``, ``"Rolling update"`` …).

    Raises:
        InvalidInput: neither; the message lists the choices.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value in set(Method):
        return Method(value)
    if isinstance(value, str):
        if value.isascii() and value.isdigit() and int(value) in set(Method):
            return Method(int(value))
        found = METHOD_ALIASES.get(value.strip().lower())
        if found is not None:
            return found
    choices = ", ".join(f"{int(m)} ({n})" for m, n in _method_names())
    raise InvalidInput(f"unknown method {value!r}: choose one of {choices}", field="method")


def _method_names() -> list[tuple[Method, str]]:
    short = {
        v: k
        for k, v in METHOD_ALIASES.items()
        if k in {"forced", "rolling", "ab", "bleed-off", "canary", "custom"}
    }
    return [(m, short[m]) for m in Method]


def run_time_seconds(amount: object, unit: object) -> float | None:
    """``max_run_time`` in ``unit`` (a name or 0..3) as seconds; 0 or None = no limit.

    Raises:
        InvalidInput: a negative or non-numeric amount, an unknown unit.
    """
    if amount is None:
        return None
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount):
        raise InvalidInput("max_run_time must be a number", field="max_run_time")
    if amount < 0:
        raise InvalidInput("max_run_time must be >= 0 (0 = no limit)", field="max_run_time")
    factor = None
    if isinstance(unit, int) and not isinstance(unit, bool) and 0 <= unit < len(UNITS):
        factor = UNITS[unit][1]
    elif isinstance(unit, str):
        factor = dict(UNITS).get(unit.strip().lower())
    if factor is None:
        names = ", ".join(f"{i} ({n})" for i, (n, _) in enumerate(UNITS))
        raise InvalidInput(
            f"max_run_time_unit must be one of {names}, got {unit!r}", field="max_run_time_unit"
        )
    return amount * factor if amount > 0 else None


def parse_stop(raw: object) -> StopPolicy:
    """``{"signal": "SIGTERM", "timeout_s": 30}`` or ``{"method": 1, "timeout_s": 30}``.

    Raises:
        InvalidInput: an unknown field, method or signal, a bad timeout.
    """
    if raw is None:
        return StopPolicy()
    if not isinstance(raw, Mapping):
        raise InvalidInput("stop must be an object with signal (or method) and timeout_s")
    unknown = sorted(set(raw) - {"signal", "method", "timeout_s"})
    if unknown:
        raise InvalidInput(f"stop: unknown field(s) {', '.join(map(str, unknown))}")
    signal = raw.get("signal")
    method = raw.get("method")
    if method is not None:
        by_id = {i: sig for i, _, sig in STOP_METHODS}
        if isinstance(method, bool) or method not in by_id:
            raise InvalidInput(f"stop.method must be one of {sorted(by_id)}, got {method!r}")
        if signal is not None and signal != by_id[method]:
            raise InvalidInput("stop.method and stop.signal disagree: give one of them")
        signal = by_id[method]
    kwargs: dict[str, Any] = {}
    if signal is not None:
        if not isinstance(signal, str):
            raise InvalidInput("stop.signal must be a signal name such as SIGTERM")
        kwargs["signal"] = signal.upper()
    if raw.get("timeout_s") is not None:
        kwargs["timeout_s"] = raw["timeout_s"]
    return StopPolicy(**kwargs)


def _knobs(cls: type[T], name: str, raw: object) -> T:
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{name} must be an object")
    allowed = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise InvalidInput(
            f"{name}: unknown field(s) {', '.join(map(str, unknown))}; "
            f"known: {', '.join(sorted(allowed))}"
        )
    values = dict(raw)
    for key, value in values.items():
        if isinstance(value, list):
            values[key] = tuple(value)
    for f in fields(cls):  # type: ignore[arg-type]
        if f.type in ("bool",) and f.name in values and not isinstance(values[f.name], bool):
            raise InvalidInput(f"{name}.{f.name} must be true or false")
    try:
        return cls(**values)
    except TypeError as e:  # a value of the wrong kind the checks did not name
        raise InvalidInput(f"{name}: {e}") from e


def parse_emails(raw: object) -> list[dict[str, Any]]:
    """``[{"email", "progress", "result"}]`` (or plain addresses), normalised.

    Raises:
        InvalidInput: not a list, too many, an unknown field or a bad flag.
    """
    if raw is None:
        return []
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise InvalidInput("emails must be a list")
    if len(raw) > MAX_EMAILS:
        raise InvalidInput(f"emails: at most {MAX_EMAILS} addresses")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(raw):
        entry = {"email": item} if isinstance(item, str) else item
        if not isinstance(entry, Mapping):
            raise InvalidInput(f"emails[{i}] must be an address or an object")
        unknown = sorted(set(entry) - {"email", "progress", "result"})
        if unknown:
            raise InvalidInput(f"emails[{i}]: unknown field(s) {', '.join(map(str, unknown))}")
        email = entry.get("email")
        if not isinstance(email, str) or len(email) > 254:
            raise InvalidInput(f"emails[{i}].email must be an address of at most 254 characters")
        flags = {k: entry.get(k, True) for k in ("progress", "result")}
        for k, v in flags.items():
            if not isinstance(v, bool | int) or v not in (0, 1):
                raise InvalidInput(f"emails[{i}].{k} must be true or false")
        out.append(
            {"email": email, "progress": bool(flags["progress"]), "result": bool(flags["result"])}
        )
    return out


def check_body(body: Mapping[str, Any]) -> None:
    """The checks of a create body that need no names resolved: no unknown field, a
    name, comments of a sane size (``services.create`` and ``simulate`` both call it).

    Raises:
        InvalidInput: the message names the field.
    """
    unknown = sorted(set(body) - BODY_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(unknown)}")
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
        raise InvalidInput("name is required: 1 to 200 characters", field="name")
    comments = body.get("comments", "")
    if not isinstance(comments, str) or len(comments) > MAX_COMMENTS:
        raise InvalidInput(f"comments must be text of at most {MAX_COMMENTS} characters")
    check_release(body.get("client_release"))


def normalise(
    body: Mapping[str, Any],
    builds: Sequence[tuple[int, int]],
    fleet_ids: Sequence[int],
    scheduled_start: float | None,
) -> dict[str, Any]:
    """The stored spec from a create body whose names ``services`` already resolved.

    Raises:
        InvalidInput: any field out of range (the message names it).
    """
    method = parse_method(body.get("method"))
    stop = parse_stop(body.get("stop"))
    max_s = run_time_seconds(body.get("max_run_time"), body.get("max_run_time_unit", "seconds"))
    raw_steps = body.get("steps")
    stored = {
        "name": body.get("name", ""),
        "method": int(method),
        "builds": [[old, new] for old, new in builds],
        "fleet_ids": list(fleet_ids),
        "stop": {"signal": stop.signal, "timeout_s": stop.timeout_s},
        "scheduled_start": scheduled_start,
        "max_run_time": body.get("max_run_time"),
        "max_run_time_unit": body.get("max_run_time_unit", "seconds"),
        "max_run_time_s": max_s,
        "rolling": asdict(_knobs(RollingKnobs, "rolling", body.get("rolling"))),
        "drain": asdict(_knobs(DrainPolicy, "drain", body.get("drain"))),
        "canary": asdict(_knobs(CanaryKnobs, "canary", body.get("canary"))),
        "ab": asdict(_knobs(ABKnobs, "ab", body.get("ab"))),
        "failure_threshold": body.get("failure_threshold", 0.0),
        "steps": list(raw_steps) if raw_steps is not None else [],
        "emails": parse_emails(body.get("emails")),
    }
    stored["drain"]["notice_before_s"] = list(stored["drain"]["notice_before_s"])
    to_spec(1, stored)  # every remaining rule (JobSpec, steps) checked now, not at start
    return stored


def stored_terms(profiles: Mapping[int, RunSpec]) -> dict[str, dict[str, Any]]:
    """The stored ``profiles`` entry for the builds' profiles (id -> run spec)."""
    return {
        str(pid): {"stop_timeout_s": run.stop_timeout_s, "state": run.state}
        for pid, run in sorted(profiles.items())
    }


def _terms(stored: Mapping[str, Any]) -> dict[int, ProfileTerms]:
    return {
        int(pid): ProfileTerms(
            stop_timeout_s=float(raw["stop_timeout_s"]),
            exclusive_state=raw.get("state") == "exclusive",
        )
        for pid, raw in (stored.get("profiles") or {}).items()
    }


def to_spec(job_id: int, stored: Mapping[str, Any]) -> JobSpec:
    """The planners' ``JobSpec`` from a stored spec.

    Raises:
        InvalidInput: a field out of range (only possible for a body being validated).
    """
    method = Method(stored["method"])
    threshold = stored.get("failure_threshold", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise InvalidInput("failure_threshold must be a number in [0, 1)")
    steps = parse_steps(stored["steps"]) if method is Method.CUSTOM else ()
    if method is not Method.CUSTOM and stored["steps"]:
        raise InvalidInput("steps are only for the custom method (6)")
    return JobSpec(
        job_id=job_id,
        method=method,
        builds=tuple(BuildPair(int(o), int(n)) for o, n in stored["builds"]),
        fleet_ids=tuple(int(f) for f in stored["fleet_ids"]),
        name=str(stored.get("name", "")),
        scheduled_start=stored.get("scheduled_start"),
        max_run_time_s=stored.get("max_run_time_s"),
        stop=StopPolicy(**stored["stop"]),
        rolling=_knobs(RollingKnobs, "rolling", stored["rolling"]),
        drain=_knobs(DrainPolicy, "drain", stored["drain"]),
        canary=_knobs(CanaryKnobs, "canary", stored["canary"]),
        ab=_knobs(ABKnobs, "ab", stored["ab"]),
        failure_threshold=float(threshold),
        steps=steps,
        emails=tuple(e["email"] for e in stored["emails"]),
        profiles=_terms(stored),
        client_release=(
            ClientRelease.from_dict(stored["client_release"])
            if stored.get("client_release")
            else None
        ),
    )


def side_by_side(spec: JobSpec) -> str | None:
    """Why ``spec`` runs an old instance and its replacement at the same time, or None when
    it never does (forced; rolling with ``max_surge`` 0). A profile whose state is
    exclusive (``runspec.STATE_MODES``) cannot be moved that way: its replacement takes
    the old one's state slot and starts only once the old one has ended."""
    if spec.method is Method.FORCED:
        return None
    if spec.method is Method.ROLLING:
        if spec.rolling.max_surge in (0, "0%"):
            return None
        return f"rolling with max_surge {spec.rolling.max_surge} starts replacements beside them"
    return {
        Method.AB: "A/B runs the whole new set beside the old one",
        Method.BLEED_OFF: "bleed-off starts the new build while the old one drains",
        Method.CANARY: "canary runs new instances beside the old ones",
        Method.CUSTOM: "a custom job starts the new set before it removes the old one",
    }.get(spec.method, f"{spec.method.label} runs old and new side by side")


def stored_spec(
    body: Mapping[str, Any],
    builds: Sequence[tuple[int, int]],
    fleet_ids: Sequence[int],
    runs: Mapping[int, tuple[str, RunSpec]],
) -> dict[str, Any]:
    """What a job stores of its create body once its names are resolved (``builds`` as
    (old, new) profile ids; ``runs``: the builds' profiles, id -> (name, run spec)): the
    checks create makes after resolving, in its order. The simulator calls it too, so a
    body create refuses is refused there with the same error.

    Raises:
        InvalidInput: see ``normalise`` and ``check_state_modes``.
    """
    requested = body.get("scheduled_start")
    stored = normalise(body, builds, fleet_ids, None if requested is None else float(requested))
    exclusive = sorted(name for name, run in runs.values() if run.state == "exclusive")
    check_state_modes(to_spec(1, stored), exclusive)
    stored["profiles"] = stored_terms({pid: run for pid, (_, run) in runs.items()})
    stored["body"] = {k: v for k, v in body.items() if k in BODY_FIELDS}
    return stored


def check_state_modes(spec: JobSpec, exclusive_profiles: Sequence[str]) -> None:
    """Refuse a method that runs old and new side by side for profiles with exclusive state.

    Raises:
        InvalidInput: naming the profiles, the reason and the methods that fit.
    """
    why = side_by_side(spec)
    if why is None or not exclusive_profiles:
        return
    raise InvalidInput(
        f"profile(s) {', '.join(exclusive_profiles)} declare exclusive state (one server"
        f" at a time on an instance's state), but {why}; use method forced, or rolling"
        ' with "max_surge": 0',
        field="method",
        profiles=list(exclusive_profiles),
    )


def stop_methods_table() -> list[dict[str, object]]:
    """``GET .../stop-methods``."""
    return [{"id": i, "name": n, "signal": sig} for i, n, sig in STOP_METHODS]


__all__ = [
    "BODY_FIELDS",
    "MAX_COMMENTS",
    "METHOD_ALIASES",
    "STOP_METHODS",
    "check_body",
    "check_state_modes",
    "normalise",
    "parse_emails",
    "parse_method",
    "parse_stop",
    "run_time_seconds",
    "side_by_side",
    "stop_methods_table",
    "stored_spec",
    "stored_terms",
    "to_spec",
]
