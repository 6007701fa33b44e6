"""The step list of a custom patch job (method 6), and the rules it is checked against up front.

A custom job is a list of steps run in order (``strategies.custom``):

    start_new(share)          start replacements beside a share of the old set (rounded up)
    wait_healthy(timeout_s)   every replacement started so far ready for min_healthy_time
    run_check(command)        a verification command against the new set; must pass
    switch_allocation(weight) send ``weight`` of new players to the new build, the rest old
    notify(deadline_s)        shutdown notice to old instances with players
    drain(deadline_s)         old instances take no new players; stopped when empty, by force
                              at the deadline (with notices)
    stop_old                  save-acknowledged handoff, then stop: each busy old instance is
                              asked to save and stopped on its "state saved" (or after
                              stop.timeout_s); empty ones stop at once
    pause(reason)             wait for an operator's resume

``validate_steps`` refuses, with ``InvalidInput`` naming ``steps[i].field``, any list that
could hurt players or end half-done: no player may reach a new set that has not passed a
``wait_healthy`` since it was last started; the old set may only be removed after the
whole new set was started and found healthy; and the list must end with allocation fully
on the new build (a ``switch_allocation`` of weight 1) and the old set removed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from changeover.errors import InvalidInput

MAX_STEPS: Final = 50


class StepKind(StrEnum):
    START_NEW = "start_new"
    WAIT_HEALTHY = "wait_healthy"
    RUN_CHECK = "run_check"
    SWITCH_ALLOCATION = "switch_allocation"
    NOTIFY = "notify"
    DRAIN = "drain"
    STOP_OLD = "stop_old"
    PAUSE = "pause"


@dataclass(frozen=True)
class CustomStep:
    kind: StepKind
    share: float = 1.0
    """start_new: the share of the old set to replace (cumulative, rounded up)."""
    command: str = ""
    """run_check: the verification command."""
    timeout_s: float | None = None
    """wait_healthy (default rolling.healthy_deadline_s), run_check (default 300 s)."""
    weight: float = 1.0
    """switch_allocation: the share of new players sent to the new build."""
    deadline_s: float | None = None
    """notify: the announced shutdown is this far away (required); drain: its deadline
    (default drain.deadline_s)."""
    reason: str = ""
    """notify, pause: shown to players / operators."""


_FIELDS: Final = frozenset(
    {"kind", "share", "command", "timeout_s", "weight", "deadline_s", "reason"}
)


def parse_steps(raw: Sequence[Mapping[str, object]]) -> tuple[CustomStep, ...]:
    """Steps from their JSON form (``[{"kind": "start_new", "share": 0.5}, …]``), validated.

    Raises:
        InvalidInput: an unknown kind or field, a wrong type, or a list ``validate_steps``
            refuses; the message names ``steps[i].field``.
    """
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise InvalidInput("steps must be a list of objects")
    steps: list[CustomStep] = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise InvalidInput(f"steps[{i}] must be an object with a 'kind'")
        unknown = sorted(set(item) - _FIELDS)
        if unknown:
            raise InvalidInput(f"steps[{i}]: unknown field(s) {', '.join(map(str, unknown))}")
        kind = item.get("kind")
        if kind not in set(StepKind):
            kinds = ", ".join(k.value for k in StepKind)
            raise InvalidInput(f"steps[{i}].kind must be one of {kinds}, got {kind!r}")
        numbers: dict[str, float | None] = {}
        for name in ("share", "weight", "timeout_s", "deadline_s"):
            value = item.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise InvalidInput(f"steps[{i}].{name} must be a number, got {value!r}")
            numbers[name] = None if value is None else float(value)
        for name in ("command", "reason"):
            if not isinstance(item.get(name, ""), str):
                raise InvalidInput(f"steps[{i}].{name} must be a string")
        steps.append(
            CustomStep(
                kind=StepKind(str(kind)),
                share=1.0 if numbers["share"] is None else numbers["share"],
                command=str(item.get("command", "")),
                timeout_s=numbers["timeout_s"],
                weight=1.0 if numbers["weight"] is None else numbers["weight"],
                deadline_s=numbers["deadline_s"],
                reason=str(item.get("reason", "")),
            )
        )
    return validate_steps(steps)


def _positive(i: int, name: str, value: float | None, *, required: bool = False) -> None:
    if value is None:
        if required:
            raise InvalidInput(f"steps[{i}].{name} is required")
        return
    if not math.isfinite(value) or not 0 < value <= 7 * 24 * 3600:
        raise InvalidInput(f"steps[{i}].{name} must be > 0 and at most 7 days, got {value!r}")


def validate_steps(steps: Sequence[CustomStep]) -> tuple[CustomStep, ...]:
    """The list, if it is safe to run (see the module docstring).

    Raises:
        InvalidInput: the first problem found, naming ``steps[i]`` and the field.
    """
    if not 1 <= len(steps) <= MAX_STEPS:
        raise InvalidInput(f"steps must hold 1 to {MAX_STEPS} steps, got {len(steps)}")
    started = False  # some replacements exist
    started_all = False  # the whole old set has replacements
    gated = False  # every replacement started so far passed a wait_healthy
    fully_switched = retired = False
    for i, s in enumerate(steps):
        if s.kind is StepKind.START_NEW:
            if not math.isfinite(s.share) or not 0 < s.share <= 1:
                raise InvalidInput(f"steps[{i}].share must be in (0, 1], got {s.share!r}")
            started, gated = True, False
            started_all = started_all or s.share == 1
            continue
        if not started and s.kind is not StepKind.PAUSE:
            raise InvalidInput(f"steps[{i}] ({s.kind.value}) needs a start_new step before it")
        if s.kind is StepKind.WAIT_HEALTHY:
            _positive(i, "timeout_s", s.timeout_s)
            gated = True
        elif s.kind is StepKind.RUN_CHECK:
            if not s.command.strip():
                raise InvalidInput(f"steps[{i}].command is required for run_check")
            _positive(i, "timeout_s", s.timeout_s)
        elif s.kind is StepKind.SWITCH_ALLOCATION:
            if not math.isfinite(s.weight) or not 0 <= s.weight <= 1:
                raise InvalidInput(f"steps[{i}].weight must be in [0, 1], got {s.weight!r}")
            if s.weight > 0 and not gated:
                raise InvalidInput(
                    f"steps[{i}] sends players to instances that were not health-checked: "
                    "put a wait_healthy step after the last start_new"
                )
            fully_switched = s.weight == 1
        elif s.kind is StepKind.NOTIFY:
            _positive(i, "deadline_s", s.deadline_s, required=True)
        elif s.kind in (StepKind.DRAIN, StepKind.STOP_OLD):
            _positive(i, "deadline_s", s.deadline_s)
            if not (started_all and gated):
                raise InvalidInput(
                    f"steps[{i}] ({s.kind.value}) removes the old set before the whole new "
                    "set is started (start_new with share 1) and healthy (wait_healthy)"
                )
            retired = True
    if not fully_switched:
        raise InvalidInput(
            "steps never leave allocation fully on the new build: "
            "end with a switch_allocation of weight 1"
        )
    if not retired:
        raise InvalidInput("steps never remove the old set: add a drain or stop_old step")
    return tuple(steps)


__all__ = ["MAX_STEPS", "CustomStep", "StepKind", "parse_steps", "validate_steps"]
