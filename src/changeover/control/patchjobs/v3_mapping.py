"""Seed 001's PatchJob JSON and Changeover's job, each way; pure (no database, no HTTP).

The ``/v3`` facade (``v3_views``) runs every request through here and through the same
``services`` as ``/api/v1``, so no rule lives twice:

    seed body ──ref_ids──> ids to resolve (v3_ids) ──to_body──> our body ──services──> job
    job_dict + ids ──from_job──> seed element        our errors ──translate──> seed names

Field by field (docs/patchjobs.md, "The /v3 facade", has the table):

    deploymentEnvironmentId  environment (its name)   patchJobName         name
    applicationId            application              comments             comments
    patchJobMethodId         method                   schedulerStartTime   scheduled_start (0: now)
    stopMethodId             stop.method              patchJobRunTime      max_run_time (0: none)
    stopMethodTimeout        stop.timeout_s           patchJobRuntimeType  max_run_time_unit 0..3
    applicationBuild[].old/newApplicationBuildId      builds[].old/new (profile names)
    fleet[].fleetId          fleets                   email[]              emails[] (flags 0/1)

Read-only fields (``READ_ONLY``) are accepted in a body and ignored, so that an element
read with ``GET`` can be sent back with ``PUT`` as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from changeover.control.patchjobs.specs import STOP_METHODS, UNITS, parse_emails, parse_method
from changeover.errors import ChangeoverError, InvalidInput

RUNTIME_NAMES: Final = tuple(name.capitalize() for name, _ in UNITS)
"""patchJobRuntimeType 0..3 -> its name (Seconds, Minutes, Hours, Days)."""
STOP_NAMES: Final = {i: name for i, name, _ in STOP_METHODS}
STOP_BY_SIGNAL: Final = {sig: i for i, _, sig in STOP_METHODS}
STOP_SIGNALS: Final = {i: sig for i, _, sig in STOP_METHODS}
READ_ONLY: Final = frozenset(
    {
        "id",
        "patchJobMethod",
        "status",
        "stopMethodName",
        "patchJobStartTime",
        "patchJobRuntime",
        "patchJobInstanceRunTime",
        "patchJobInstanceRuntimeTypeId",
        "patchJobInstanceRuntime",
        "patchJobOverallProgress",
        "createdAt",
        "changedAt",
        "updatedAt",
    }
)
"""Fields of the element the server writes; a body's are ignored."""
ENTRY_ID_STRIDE: Final = 1000
"""An ``applicationBuild`` or ``fleet`` entry's id: job id x 1000 + its position (1-based);
Changeover stores those lists in the job, not as rows of their own."""

# Our field -> the seed's, for error messages and facts.
FIELDS: Final[Mapping[str, str]] = {
    "name": "patchJobName",
    "environment": "deploymentEnvironmentId",
    "application": "applicationId",
    "method": "patchJobMethodId",
    "builds": "applicationBuild",
    "fleets": "fleet",
    "stop": "stopMethodId",
    "stop.method": "stopMethodId",
    "stop.signal": "stopMethodId",
    "stop.timeout_s": "stopMethodTimeout",
    "comments": "comments",
    "scheduled_start": "schedulerStartTime",
    "max_run_time": "patchJobRunTime",
    "max_run_time_s": "patchJobRunTime",
    "max_run_time_unit": "patchJobRuntimeType",
    "emails": "email",
}
_ITEM_FIELDS: Final = {
    "old": "oldApplicationBuildId",
    "new": "newApplicationBuildId",
    "email": "email",
    "progress": "progressReport",
    "result": "resultReport",
}
_ITEM = re.compile(r"\b(builds|emails)\[(\d+)\](?:\.(old|new|email|progress|result)\b)?")
_TOKEN = re.compile(
    r"\b(stop\.method|stop\.signal|stop\.timeout_s|scheduled_start|max_run_time_unit"
    r"|max_run_time_s|max_run_time|emails)\b"
)
_LEADING = re.compile(r"^(name|environment|application|method|builds|fleets|emails|comments)\b")


def seed_field(ours: str) -> str:
    """Our field name (``builds[0].old``, ``scheduled_start``) as the seed's."""
    m = _ITEM.fullmatch(ours)
    if m:
        head = FIELDS[m.group(1)]
        return f"{head}[{m.group(2)}]" + (f".{_ITEM_FIELDS[m.group(3)]}" if m.group(3) else "")
    return FIELDS.get(ours, ours)


def _seed_text(message: str) -> str:
    message = _ITEM.sub(lambda m: seed_field(m.group(0)), message)
    message = _TOKEN.sub(lambda m: FIELDS[m.group(1)], message)
    return _LEADING.sub(lambda m: FIELDS[m.group(1)], message)


def translate(error: ChangeoverError) -> ChangeoverError:
    """The same error (same type, same facts) speaking the seed's field names: in its
    message, its ``field`` and ``fields`` facts; a message that did not name the field
    gets it in front."""
    facts = dict(error.facts)
    message = error.message
    listed = facts.get("fields")
    if isinstance(listed, list):
        ours = [str(f) for f in listed]
        theirs = list(dict.fromkeys(seed_field(f) for f in ours))
        message = message.replace(", ".join(ours), ", ".join(theirs))
        facts["fields"] = theirs
    message = _seed_text(message)
    field = facts.get("field")
    if isinstance(field, str):
        facts["field"] = field = seed_field(field)
        if field not in message:
            message = f"{field}: {message}"
    out = type(error).__new__(type(error))
    ChangeoverError.__init__(out, message, **facts)
    return out


# -- seed body -> ours ---------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A seed id a body names: its kind (``v3_ids.KINDS``), the id, and where it was."""

    kind: str
    id: str
    field: str


def ref_ids(fields: Mapping[str, Any]) -> list[Ref]:
    """Every id of another element ``fields`` (a body, or a part of one) names."""
    refs = []
    if fields.get("deploymentEnvironmentId") is not None:
        refs.append(
            Ref(
                "deploymentEnvironment",
                fields["deploymentEnvironmentId"],
                "deploymentEnvironmentId",
            )
        )
    if fields.get("applicationId") is not None:
        refs.append(Ref("application", fields["applicationId"], "applicationId"))
    for i, pair in enumerate(fields.get("applicationBuild") or ()):
        for side in ("oldApplicationBuildId", "newApplicationBuildId"):
            refs.append(Ref("applicationBuild", pair[side], f"applicationBuild[{i}].{side}"))
    for i, entry in enumerate(fields.get("fleet") or ()):
        refs.append(Ref("fleet", entry["fleetId"], f"fleet[{i}].fleetId"))
    return refs


def to_body(
    fields: Mapping[str, Any],
    names: Mapping[tuple[str, str], str],
    current: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Our body (or, with ``current``, our edit) from the seed's ``fields`` as sent
    (read-only ones ignored); ``names``: (kind, seed id) -> our name, for every
    ``ref_ids``. ``current``: the job's body, which a lone ``stopMethodId`` or
    ``stopMethodTimeout`` edits half of."""

    def name(kind: str, value: str | None) -> str | None:
        return None if value is None else names[kind, value]

    body: dict[str, Any] = {}
    if "patchJobName" in fields:
        body["name"] = fields["patchJobName"]
    if "deploymentEnvironmentId" in fields:
        body["environment"] = name("deploymentEnvironment", fields["deploymentEnvironmentId"])
    if "applicationId" in fields:
        body["application"] = name("application", fields["applicationId"])
    if "patchJobMethodId" in fields:
        body["method"] = fields["patchJobMethodId"]
    if fields.get("applicationBuild") is not None:
        body["builds"] = [
            {
                "old": names["applicationBuild", b["oldApplicationBuildId"]],
                "new": names["applicationBuild", b["newApplicationBuildId"]],
            }
            for b in fields["applicationBuild"]
        ]
    elif "applicationBuild" in fields:
        body["builds"] = None
    if fields.get("fleet") is not None:
        body["fleets"] = [names["fleet", f["fleetId"]] for f in fields["fleet"]]
    elif "fleet" in fields:
        body["fleets"] = None
    if "stopMethodId" in fields or "stopMethodTimeout" in fields:
        stop = dict((current or {}).get("stop") or {})
        if "stopMethodId" in fields:
            stop.pop("signal", None)  # a stop method is a signal: the new one replaces it
        for ours, theirs in (("method", "stopMethodId"), ("timeout_s", "stopMethodTimeout")):
            if theirs in fields:
                stop[ours] = fields[theirs]
        body["stop"] = {k: v for k, v in stop.items() if v is not None} or None
    if "comments" in fields:
        body["comments"] = fields["comments"]
    if "schedulerStartTime" in fields:
        body["scheduled_start"] = fields["schedulerStartTime"] or None
    if "patchJobRunTime" in fields:
        body["max_run_time"] = fields["patchJobRunTime"]
    if "patchJobRuntimeType" in fields:
        body["max_run_time_unit"] = fields["patchJobRuntimeType"]
    if "email" in fields:
        body["emails"] = (
            None
            if fields["email"] is None
            else [
                {
                    "email": e["email"],
                    "progress": bool(e.get("progressReport", 1)),
                    "result": bool(e.get("resultReport", 1)),
                }
                for e in fields["email"]
            ]
        )
    if current is not None:
        _keep_equivalents(body, current)
    return body


def _stop_terms(stop: object) -> tuple[object, object]:
    """A stop as (signal, timeout), however it was given (a method id or a signal)."""
    if not isinstance(stop, Mapping):
        return (None, None)
    signal = stop.get("signal")
    method = stop.get("method")
    if isinstance(method, int) and not isinstance(method, bool):
        signal = STOP_SIGNALS.get(method, method)
    timeout = stop.get("timeout_s")
    return (signal.upper() if isinstance(signal, str) else signal, _number(timeout))


def _number(value: object) -> object:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _same_start(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is b
    return isinstance(a, int | float) and isinstance(b, int | float) and int(a) == int(b)


def _parsed(parse: Callable[[object], object]) -> Callable[[object, object], bool]:
    """Equal once both are parsed as the service parses them (never, when one is bad)."""

    def same(a: object, b: object) -> bool:
        try:
            return parse(a) == parse(b)
        except InvalidInput:
            return False

    return same


def _text(value: object) -> object:
    return (value or "").strip() if isinstance(value, str | None) else value


_EQUIVALENT: Final[Mapping[str, Callable[[object, object], bool]]] = {
    "name": lambda a, b: _text(a) == _text(b),
    "comments": lambda a, b: (a or "") == (b or ""),
    "method": _parsed(parse_method),
    "emails": _parsed(parse_emails),
    "stop": lambda a, b: _stop_terms(a) == _stop_terms(b),
    "max_run_time_unit": lambda a, b: _unit_index(a) == _unit_index(b) is not None,
    "max_run_time": lambda a, b: _number(a or 0) == _number(b or 0),
    "scheduled_start": _same_start,
}


def _keep_equivalents(body: dict[str, Any], current: Mapping[str, Any]) -> None:
    """Where an edit says what the job already says in another form (a signal as a stop
    method, ``"hours"`` as 2, ``"forced"`` as 1, 1700000000.5 as a whole second, no
    comments as ""), keep the job's form: that field has not changed, and the edit lock
    does not count it."""
    for key, same in _EQUIVALENT.items():
        if key in body and same(body[key], current.get(key)):
            if key in current:
                body[key] = current[key]
            else:
                del body[key]


# -- our job -> the seed's element --------------------------------------------------------


@dataclass(frozen=True)
class JobIds:
    """What the seed's element shows that ``job_dict`` gives otherwise (names, row ids) or
    not at all."""

    environment: str
    application: str
    profiles: Mapping[int, str]
    """Profile row id -> its seed id."""
    fleets: Sequence[str]
    """The job's fleets' seed ids, in the job's order."""
    emails: Mapping[str, int]
    """Address -> its row id."""
    edited_at: float | None = None
    """The job's last edit (its last ``updated`` event); None: never edited."""


def _unit_index(unit: object) -> int | None:
    """A run-time unit (0..3 or a name) as its number; none given means seconds, None
    means not a unit."""
    if unit is None:
        return 0
    if isinstance(unit, int) and not isinstance(unit, bool):
        return unit if 0 <= unit < len(UNITS) else None
    names = [name for name, _ in UNITS]
    if isinstance(unit, str) and unit.strip().lower() in names:
        return names.index(unit.strip().lower())
    return None


def _stop_method(body_stop: object, stop: Mapping[str, Any]) -> int | None:
    if isinstance(body_stop, Mapping) and isinstance(body_stop.get("method"), int):
        return int(body_stop["method"])
    signal = stop.get("signal")
    return None if signal is None else STOP_BY_SIGNAL.get(signal)


def _time(value: float | None) -> int:
    return 0 if value is None else int(value)


def overall_progress(job: Mapping[str, Any]) -> int | None:
    """Percent of the selection done; None before the job starts (as in the seed)."""
    if job["phase"] == "pending":
        return None
    total = int(job["progress"]["total"])
    done = int(job["progress"]["by_state"].get("done", 0))
    return 100 if total == 0 else done * 100 // total


def from_job(job: Mapping[str, Any], ids: JobIds, body: Mapping[str, Any]) -> dict[str, Any]:
    """The seed's PatchJob element of ``job`` (``services.job_dict``); ``body``: the job's
    stored body, for the stop method as it was given."""
    job_id = int(job["id"])
    unit = _unit_index(job["max_run_time_unit"]) or 0
    stop_id = _stop_method(body.get("stop"), job["stop"])
    timeout = job["stop"]["timeout_s"]
    changed = _time(ids.edited_at)
    return {
        "id": str(job_id),
        "deploymentEnvironmentId": ids.environment,
        "applicationId": ids.application,
        "patchJobMethodId": job["method"],
        "patchJobMethod": job["method_name"],
        "patchJobName": job["name"],
        "status": job["status"],
        "stopMethodId": stop_id,
        "stopMethodName": None if stop_id is None else STOP_NAMES[stop_id],
        "stopMethodTimeout": None if timeout is None else round(timeout),
        "comments": job["comments"],
        "schedulerStartTime": _time(job["scheduled_start"]),
        "patchJobStartTime": _time(job["started_at"]),
        "patchJobRunTime": round(job["max_run_time"] or 0),
        "patchJobRuntimeType": unit,
        "patchJobRuntime": RUNTIME_NAMES[unit],
        "patchJobInstanceRunTime": RUNTIME_NAMES[unit],
        "patchJobInstanceRuntimeTypeId": unit,
        "patchJobInstanceRuntime": RUNTIME_NAMES[unit],
        "patchJobOverallProgress": overall_progress(job),
        "applicationBuild": [
            {
                "id": str(job_id * ENTRY_ID_STRIDE + n),
                "oldApplicationBuildId": ids.profiles[b["old_id"]],
                "newApplicationBuildId": ids.profiles[b["new_id"]],
            }
            for n, b in enumerate(job["builds"], 1)
        ],
        "fleet": [
            {"id": str(job_id * ENTRY_ID_STRIDE + n), "fleetId": fleet_id}
            for n, fleet_id in enumerate(ids.fleets, 1)
        ],
        "email": [
            {
                "id": str(ids.emails[e["email"]]),
                "email": e["email"],
                "progressReport": int(e["progress"]),
                "resultReport": int(e["result"]),
                "createdAt": int(e["created_at"]),
                "changedAt": _time(e["changed_at"]),
            }
            for e in job["emails"]
        ],
        "createdAt": int(job["created_at"]),
        "changedAt": changed,
        "updatedAt": changed,
    }


def preview_regions(
    preview: Mapping[str, Any], region_ids: Mapping[str, int]
) -> list[dict[str, Any]]:
    """``services.preview``'s regions as the seed's array: one entry per region."""
    return [
        {
            "regionId": str(region_ids[r["region"]]),
            "regionName": r["region"],
            "instanceCount": r["instances"],
        }
        for r in preview["regions"]
    ]


def stop_methods() -> list[dict[str, object]]:
    """``GET /v3/application/stopMethod``."""
    return [{"id": i, "name": name} for i, name in STOP_NAMES.items()]


__all__ = [
    "FIELDS",
    "READ_ONLY",
    "RUNTIME_NAMES",
    "JobIds",
    "Ref",
    "from_job",
    "overall_progress",
    "preview_regions",
    "ref_ids",
    "seed_field",
    "stop_methods",
    "to_body",
    "translate",
]
