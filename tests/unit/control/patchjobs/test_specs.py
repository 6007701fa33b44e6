"""The stored spec of a patch job: method names, units, stop methods, knobs, round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from changeover.control.patchjobs import specs
from changeover.control.patchjobs.knobs import StopPolicy
from changeover.control.patchjobs.model import Member, ProfileTerms
from changeover.control.patchjobs.states import Method
from changeover.errors import InvalidInput
from changeover.runspec import RunSpec


def body(**extra: Any) -> dict[str, Any]:
    return {"name": "j", "method": "rolling", **extra}


def test_methods_by_id_short_name_or_label() -> None:
    assert specs.parse_method(4) is Method.BLEED_OFF
    assert specs.parse_method("bleed-off") is Method.BLEED_OFF
    assert specs.parse_method("A/B deployment") is Method.AB
    assert specs.parse_method("6") is Method.CUSTOM
    for bad in (0, 7, True, "teleport", None, 2.0):
        with pytest.raises(InvalidInput, match="unknown method"):
            specs.parse_method(bad)


def test_run_time_units() -> None:
    assert specs.run_time_seconds(2, "hours") == 7200
    assert specs.run_time_seconds(3, 1) == 180
    assert specs.run_time_seconds(0, "days") is None  # 0 = no limit
    assert specs.run_time_seconds(None, "weeks") is None
    with pytest.raises(InvalidInput, match="max_run_time_unit"):
        specs.run_time_seconds(1, "weeks")
    with pytest.raises(InvalidInput, match=">= 0"):
        specs.run_time_seconds(-1, "seconds")
    with pytest.raises(InvalidInput, match="number"):
        specs.run_time_seconds(float("nan"), "seconds")


def test_stop_by_signal_or_seed_method_id() -> None:
    assert specs.parse_stop({"method": 0}).signal == "SIGKILL"
    assert specs.parse_stop({"signal": "sigint", "timeout_s": 3}).timeout_s == 3
    assert specs.parse_stop(None) == StopPolicy(None, None)
    assert specs.parse_stop({"timeout_s": 5}) == StopPolicy(None, 5)  # the profile's signal
    for bad, text in [
        ({"method": 99}, "stop.method"),
        ({"method": 0, "signal": "SIGTERM"}, "disagree"),
        ({"signal": "SIGSEGV"}, "stop.signal"),
        ({"sig": "SIGTERM"}, "unknown field"),
        ({"timeout_s": -1}, "stop.timeout_s"),
    ]:
        with pytest.raises(InvalidInput, match=text):
            specs.parse_stop(bad)


def test_normalise_round_trips_to_the_planners_spec() -> None:
    stored = specs.normalise(
        body(
            rolling={"max_surge": 2, "min_healthy_time_s": 1},
            drain={"deadline_s": 60, "notice_before_s": [10, 30]},
            max_run_time=1,
            max_run_time_unit="hours",
            emails=["ops@example.com", {"email": "dev@example.com", "progress": False}],
        ),
        [(1, 2)],
        [7, 8],
        None,
    )
    spec = specs.to_spec(5, stored)
    assert (spec.job_id, spec.method, spec.fleet_ids) == (5, Method.ROLLING, (7, 8))
    assert spec.rolling.max_surge == 2 and spec.max_run_time_s == 3600
    assert spec.drain.notice_before_s == (30, 10)
    assert spec.emails == ("ops@example.com", "dev@example.com")
    assert stored["emails"][1] == {"email": "dev@example.com", "progress": False, "result": True}


def test_the_builds_profiles_reach_the_planners_through_the_stored_spec() -> None:
    stored = specs.normalise(body(method="forced"), [(1, 2)], [7], None)
    assert specs.to_spec(5, stored).profiles == {}  # a job stored before: the defaults
    old = RunSpec(("srv",), stop_timeout_s=120.0)
    new = RunSpec(("srv",), stop_timeout_s=45.0, state="exclusive")
    stored["profiles"] = specs.stored_terms({2: new, 1: old})
    assert stored["profiles"] == {
        "1": {"stop_timeout_s": 120.0, "state": "instance"},
        "2": {"stop_timeout_s": 45.0, "state": "exclusive"},
    }
    spec = specs.to_spec(5, json.loads(json.dumps(stored)))
    assert spec.profiles == {1: ProfileTerms(120.0, False), 2: ProfileTerms(45.0, True)}
    (m,) = [Member(9, 7, "h", "eu", 1, 2)]
    assert spec.exclusive_state(m) and spec.stop_wait_s(1) == 120.0


@pytest.mark.parametrize(
    ("extra", "text"),
    [
        ({"rolling": {"speed": 1}}, "unknown field"),
        ({"rolling": {"auto_revert": "yes"}}, "rolling.auto_revert must be true or false"),
        ({"canary": {"share": 2}}, "canary.share"),
        ({"drain": {"notice_before_s": [1, 1]}}, "repeat"),
        ({"steps": [{"kind": "start_new"}]}, "only for the custom method"),
        ({"method": "custom", "steps": [{"kind": "start_new"}]}, "switch_allocation"),
        ({"emails": [{"email": "x@y.z", "progress": 3}]}, "emails\\[0\\].progress"),
        ({"emails": ["nope"]}, "not an e-mail address"),
        ({"failure_threshold": "a lot"}, "failure_threshold"),
    ],
)
def test_normalise_refuses_with_the_field_named(extra: dict[str, Any], text: str) -> None:
    with pytest.raises(InvalidInput, match=text):
        specs.normalise(body(**extra), [(1, 2)], [7], None)


def test_stop_methods_table() -> None:
    table = specs.stop_methods_table()
    assert table[0] == {"id": 0, "name": "Hard kill", "signal": "SIGKILL"}
    assert [t["id"] for t in table] == list(range(len(table)))
