"""A custom job's step list is checked up front, with errors that name the step and field."""

from __future__ import annotations

from typing import Any

import pytest

from changeover.control.patchjobs.model import Method
from changeover.control.patchjobs.steps import CustomStep, StepKind, parse_steps
from changeover.errors import InvalidInput
from unit.control.patchjobs.patchjob_world import spec_for

START = {"kind": "start_new"}
WAIT = {"kind": "wait_healthy"}
SWITCH = {"kind": "switch_allocation", "weight": 1}
DRAIN = {"kind": "drain"}


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([], "steps must hold 1 to 50 steps"),
        ([START, WAIT, SWITCH, DRAIN] * 13, "steps must hold 1 to 50 steps"),
        ([{"kind": "explode"}], "steps[0].kind must be one of"),
        ([{"share": 1}], "steps[0].kind must be one of"),
        ([{"kind": "start_new", "colour": "red"}], "steps[0]: unknown field(s) colour"),
        ([{"kind": "start_new", "share": "half"}], "steps[0].share must be a number"),
        ([{"kind": "start_new", "share": 0}], "steps[0].share must be in (0, 1]"),
        ([WAIT], "steps[0] (wait_healthy) needs a start_new step before it"),
        ([START, SWITCH], "steps[1] sends players to instances that were not health-checked"),
        ([START, WAIT, {"kind": "run_check"}], "steps[2].command is required"),
        ([START, WAIT, {"kind": "notify"}], "steps[2].deadline_s is required"),
        ([START, WAIT, {"kind": "drain", "deadline_s": -1}], "steps[2].deadline_s must be > 0"),
        ([START, WAIT, {"kind": "switch_allocation", "weight": 2}], "steps[2].weight"),
        (
            [{"kind": "start_new", "share": 0.5}, WAIT, SWITCH, DRAIN],
            "steps[3] (drain) removes the old set before the whole new set",
        ),
        ([START, DRAIN], "steps[1] (drain) removes the old set"),
        ([START, WAIT, DRAIN], "never leave allocation fully on the new build"),
        (
            [START, WAIT, SWITCH, DRAIN, {"kind": "switch_allocation", "weight": 0.5}],
            "never leave allocation fully",
        ),
        ([START, WAIT, SWITCH], "steps never remove the old set"),
        ([START, WAIT, SWITCH, {"kind": "start_new"}, SWITCH, DRAIN], "steps[4] sends players"),
        ("start_new", "steps must be a list"),
        ([42], "steps[0] must be an object"),
    ],
)
def test_a_bad_step_list_is_refused_up_front(steps: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_steps(steps)
    assert message in e.value.message


def test_seed_004s_ideal_deployment_is_a_valid_list() -> None:
    steps = parse_steps(
        [
            {"kind": "start_new"},
            {"kind": "wait_healthy", "timeout_s": 120},
            {"kind": "run_check", "command": "./smoke --private", "timeout_s": 60},
            {"kind": "stop_old", "reason": "saving your world"},
            {"kind": "switch_allocation", "weight": 1},
        ]
    )
    assert [s.kind for s in steps] == [
        StepKind.START_NEW,
        StepKind.WAIT_HEALTHY,
        StepKind.RUN_CHECK,
        StepKind.STOP_OLD,
        StepKind.SWITCH_ALLOCATION,
    ]
    assert steps[1].timeout_s == 120.0
    assert steps[2].command == "./smoke --private"
    assert spec_for(Method.CUSTOM, steps=steps).steps == steps


def test_a_job_spec_refuses_a_bad_list_too() -> None:
    with pytest.raises(InvalidInput, match="steps never remove the old set"):
        spec_for(
            Method.CUSTOM,
            steps=(
                CustomStep(StepKind.START_NEW),
                CustomStep(StepKind.WAIT_HEALTHY),
                CustomStep(StepKind.SWITCH_ALLOCATION, weight=1),
            ),
        )


def test_a_pause_may_come_before_anything_starts() -> None:
    steps = parse_steps([{"kind": "pause", "reason": "go?"}, START, WAIT, SWITCH, DRAIN])
    assert steps[0].reason == "go?"
