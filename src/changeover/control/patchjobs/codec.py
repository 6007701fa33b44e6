"""JSON forms of what the reconciler stores: a job's progress and the actions of its outbox.

Plain dicts of JSON types, so they fit a JSON/TEXT column in SQLite and PostgreSQL alike,
and round-trip exactly (``from_dict(to_dict(x)) == x``): the progress a restarted control
plane reads back is the one the planner returned, so planning again from it gives the
same decisions. Mapping keys that are instance ids become strings in JSON and are turned
back into ints on the way in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, Final

from changeover.control.patchjobs.actions import ACTION_TYPES, Action, Finish
from changeover.control.patchjobs.model import CancelMode, JobProgress, JobStatus, Member
from changeover.errors import InvalidInput

_BY_NAME: Final = {t.__name__: t for t in ACTION_TYPES}


def _plain(value: object) -> Any:
    if isinstance(value, tuple | list | frozenset | set):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, JobStatus):
        return int(value)
    return value


def _tuples(value: object) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def action_to_dict(action: Action) -> dict[str, Any]:
    """``{"type": "StopInstance", "key": …, …}``."""
    return {"type": type(action).__name__, **_plain(asdict(action))}


def action_from_dict(data: Mapping[str, Any]) -> Action:
    """Raises: InvalidInput: an unknown action type or missing fields."""
    kind = _BY_NAME.get(str(data.get("type")))
    if kind is None:
        raise InvalidInput(f"unknown patch-job action type {data.get('type')!r}")
    try:
        values = {f.name: _tuples(data[f.name]) for f in fields(kind)}
    except KeyError as e:
        raise InvalidInput(f"{kind.__name__} is missing {e.args[0]!r}") from e
    if kind is Finish:
        values["outcome"] = JobStatus(values["outcome"])
    return kind(**values)


_MEMBER_FIELDS: Final = tuple(f.name for f in fields(Member))
_BIG: Final = frozenset({"selection", "issued", "intents", "deadlines", "marks", "check_results"})
"""The fields that grow with the fleet: converted field by field, without ``_plain``'s
walk (the reconciler writes the progress on every pass that records a decision)."""


def progress_to_dict(progress: JobProgress) -> dict[str, Any]:
    out: dict[str, Any] = _plain(
        {f.name: getattr(progress, f.name) for f in fields(JobProgress) if f.name not in _BIG}
    )
    out["selection"] = [{k: getattr(m, k) for k in _MEMBER_FIELDS} for m in progress.selection]
    for name in ("issued", "intents", "deadlines", "marks", "check_results"):
        out[name] = {str(k): v for k, v in getattr(progress, name).items()}
    out["staged"] = sorted([host, version] for host, version in progress.staged)
    out["cancel"] = None if progress.cancel is None else progress.cancel.value
    return out


def progress_from_dict(data: Mapping[str, Any]) -> JobProgress:
    """Raises: InvalidInput: a malformed record."""
    try:
        return JobProgress(
            status=JobStatus(data["status"]),
            phase=str(data["phase"]),
            step=int(data["step"]),
            phase_since=data["phase_since"],
            started_at=data["started_at"],
            finished_at=data["finished_at"],
            reason=str(data["reason"]),
            selection=tuple(Member(**m) for m in data["selection"]),
            issued={str(k): float(v) for k, v in data["issued"].items()},
            intents={int(k): str(v) for k, v in data["intents"].items()},
            deadlines={int(k): float(v) for k, v in data["deadlines"].items()},
            marks={str(k): float(v) for k, v in data["marks"].items()},
            cancel=None if data["cancel"] is None else CancelMode(data["cancel"]),
            resumes=int(data["resumes"]),
            check_results={str(k): bool(v) for k, v in data["check_results"].items()},
            staged=frozenset((str(h), int(v)) for h, v in data["staged"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInput(f"malformed patch-job progress: {e}") from e


__all__ = ["action_from_dict", "action_to_dict", "progress_from_dict", "progress_to_dict"]
