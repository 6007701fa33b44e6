"""Progress and actions survive the database: JSON round trips are exact."""

from __future__ import annotations

import json

import pytest

from changeover.control.patchjobs.codec import (
    action_from_dict,
    action_to_dict,
    progress_from_dict,
    progress_to_dict,
)
from changeover.control.patchjobs.knobs import ABKnobs
from changeover.control.patchjobs.model import CancelMode, JobProgress, Method, StopInstance
from changeover.errors import InvalidInput
from unit.control.patchjobs.patchjob_world import T0, World, drive, spec_for


@pytest.mark.parametrize("method", [Method.ROLLING, Method.AB, Method.CANARY])
def test_every_recorded_progress_and_action_round_trips_through_json(method: Method) -> None:
    world = World()
    for k in range(5):
        world.add(host=f"h{k}", leaves=[T0 + 900.0 * k] if k % 2 else [])
    kw: dict[str, object] = {"ab": ABKnobs(verify_command="check")} if method is Method.AB else {}
    run = drive(world, spec_for(method, **kw))
    seen = 0
    for _, d in run.decisions:
        text = json.dumps(progress_to_dict(d.progress), allow_nan=False)
        assert progress_from_dict(json.loads(text)) == d.progress
        for a in d.actions:
            back = action_from_dict(json.loads(json.dumps(action_to_dict(a), allow_nan=False)))
            assert back == a and type(back) is type(a)
            seen += 1
    assert seen > 10


def test_operator_fields_round_trip_too() -> None:
    p = JobProgress(cancel=CancelMode.WRAP_UP, resumes=2, check_results={"k": False})
    assert progress_from_dict(json.loads(json.dumps(progress_to_dict(p)))) == p


def test_a_malformed_record_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown patch-job action type"):
        action_from_dict({"type": "Explode"})
    with pytest.raises(InvalidInput, match="StopInstance is missing 'signal'"):
        action_from_dict({"type": StopInstance.__name__, "key": "k", "instance_id": 1})
    with pytest.raises(InvalidInput, match="malformed patch-job progress"):
        progress_from_dict({"status": 4})
