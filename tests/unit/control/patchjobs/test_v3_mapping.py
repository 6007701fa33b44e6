"""Seed 001's PatchJob JSON to ours and back (``v3_mapping``), with the seed's own example
bodies (``tests/integration/control/seed001``), no server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from changeover.control.patchjobs.v3_mapping import (
    READ_ONLY,
    JobIds,
    from_job,
    ref_ids,
    seed_field,
    to_body,
    translate,
)
from changeover.errors import Conflict, InvalidInput, NotFound

SEED = Path(__file__).parents[3] / "integration" / "control" / "seed001"
REQUEST: dict[str, Any] = json.loads((SEED / "patchjob_request.json").read_text())
RESPONSE: dict[str, Any] = json.loads((SEED / "patchjob_response.json").read_text())[0]
EMAIL = REQUEST["email"][0]["email"]
"""As the seed has it: ``[email\xa0protected]`` (a web page's mask over an address)."""
NAMES = {
    ("deploymentEnvironment", "7089186347851060494"): "prod",
    ("application", "8939460394116420757"): "arena",
    ("applicationBuild", "7302942857359174099"): "arena-v1",
    ("applicationBuild", "6257774125730552445"): "arena-v2",
    ("fleet", "7089186347851060494"): "arena-eu",
}
OURS = {
    "name": "Demo Patch Job",
    "environment": "prod",
    "application": "arena",
    "method": 1,
    "builds": [{"old": "arena-v1", "new": "arena-v2"}],
    "fleets": ["arena-eu"],
    "stop": {"method": 0, "timeout_s": 0},
    "comments": "Deployment of v2.0.5 - fixes a number of bugs",
    "scheduled_start": 1587405918,
    "max_run_time": 0,
    "max_run_time_unit": 0,
    "emails": [{"email": EMAIL, "progress": True, "result": True}],
}


def _job() -> dict[str, Any]:
    """``services.job_dict`` of the job ``OURS`` makes, 42, as created."""
    return {
        "id": 42,
        "name": "Demo Patch Job",
        "method": 1,
        "method_name": "Forced deployment",
        "status": 1,
        "phase": "pending",
        "builds": [{"old": "arena-v1", "new": "arena-v2", "old_id": 3, "new_id": 4}],
        "stop": {"signal": "SIGKILL", "timeout_s": 0.0},
        "comments": "Deployment of v2.0.5 - fixes a number of bugs",
        "scheduled_start": 1587405918.0,
        "started_at": None,
        "max_run_time": 0,
        "max_run_time_unit": 0,
        "emails": [
            {
                "email": EMAIL,
                "progress": True,
                "result": True,
                "created_at": 1587746121.5,
                "changed_at": None,
            }
        ],
        "progress": {"total": 2, "by_state": {"old": 2}, "regions": []},
        "created_at": 1587395426.2,
        "updated_at": 1587395426.2,
    }


IDS = JobIds(
    environment="7089186347851060494",
    application="8939460394116420757",
    profiles={3: "7302942857359174099", 4: "6257774125730552445"},
    fleets=["7089186347851060494"],
    emails={EMAIL: 5874260432191151466},
)


def test_the_seed_request_maps_to_our_body() -> None:
    refs = ref_ids(REQUEST)
    assert {(r.kind, r.id) for r in refs} == set(NAMES)
    assert "applicationBuild[0].newApplicationBuildId" in {r.field for r in refs}
    assert to_body(REQUEST, NAMES) == OURS


def test_our_job_maps_to_the_seed_element_with_every_field_of_its_example() -> None:
    element = from_job(_job(), IDS, OURS)
    assert set(RESPONSE) <= set(element)
    for key, value in RESPONSE.items():
        if value is not None:
            assert type(element[key]) is type(value), key
    # What the request gave comes back as it was given.
    for key, value in REQUEST.items():
        if key in ("applicationBuild", "fleet", "email"):
            for given, answered in zip(value, element[key], strict=True):
                assert {k: answered[k] for k in given} == given
        else:
            assert element[key] == value, key
    # The read-only values, as the seed's example shows them for a new job.
    assert element["patchJobMethod"] == RESPONSE["patchJobMethod"] == "Forced deployment"
    assert element["stopMethodName"] == RESPONSE["stopMethodName"] == "Hard kill"
    assert element["patchJobInstanceRuntime"] == element["patchJobRuntime"] == "Seconds"
    assert element["patchJobInstanceRunTime"] == RESPONSE["patchJobInstanceRunTime"]
    assert element["patchJobOverallProgress"] is None
    assert element["changedAt"] == 0 and element["email"][0]["changedAt"] == 0
    assert element["email"][0]["id"] == "5874260432191151466"
    assert element["applicationBuild"][0]["id"] == "42001"


def test_an_element_sent_back_is_the_same_body() -> None:
    element = from_job(_job(), IDS, OURS)
    sent = {k: v for k, v in element.items() if k not in READ_ONLY}
    assert to_body(sent, NAMES, OURS) == OURS


def test_an_edit_maps_only_what_it_sends() -> None:
    assert to_body({"email": []}, {}, OURS) == {"emails": []}
    assert to_body({"stopMethodTimeout": 30}, {}, OURS) == {"stop": {"method": 0, "timeout_s": 30}}
    current = {"stop": {"signal": "SIGTERM", "timeout_s": 5}}
    assert to_body({"stopMethodId": 2}, {}, current) == {"stop": {"method": 2, "timeout_s": 5}}
    assert to_body({"schedulerStartTime": 0}, {}, OURS) == {"scheduled_start": None}
    assert to_body({"applicationId": None}, {}, OURS) == {"application": None}


def test_an_edit_saying_what_the_job_says_in_another_form_changes_nothing() -> None:
    """A job made with /api/v1 (a signal, a unit by name, a fractional start) and sent
    back through /v3 keeps its own form: nothing counts as changed under the edit lock."""
    current = {
        "name": " Arena 2.0 ",
        "method": "forced",
        "emails": ["ops@example.com"],
        "stop": {"signal": "SIGTERM", "timeout_s": 5},
        "max_run_time": 2,
        "max_run_time_unit": "hours",
        "scheduled_start": 1700000000.5,
    }
    sent = {
        "patchJobName": "Arena 2.0",
        "patchJobMethodId": 1,
        "comments": "",
        "email": [{"email": "ops@example.com", "progressReport": 1, "resultReport": 1}],
        "stopMethodId": 1,
        "stopMethodTimeout": 5,
        "patchJobRunTime": 2,
        "patchJobRuntimeType": 2,
        "schedulerStartTime": 1700000000,
    }
    assert to_body(sent, {}, current) == current
    assert to_body({"patchJobRunTime": 0, "patchJobRuntimeType": 0}, {}, {}) == {}
    assert to_body({"patchJobRuntimeType": 3}, {}, current) == {"max_run_time_unit": 3}
    assert to_body({"stopMethodId": 0}, {}, current) == {"stop": {"method": 0, "timeout_s": 5}}


def test_errors_speak_the_seeds_field_names() -> None:
    assert seed_field("builds[1].old") == "applicationBuild[1].oldApplicationBuildId"
    assert seed_field("emails[0].progress") == "email[0].progressReport"
    e = translate(
        InvalidInput(
            "scheduled_start must be at least 5 minutes (300 s) from now",
            field="scheduled_start",
            earliest=1.0,
        )
    )
    assert isinstance(e, InvalidInput)
    assert e.message.startswith("schedulerStartTime must be at least 5 minutes")
    assert e.facts == {"field": "schedulerStartTime", "earliest": 1.0}
    locked = translate(
        Conflict(
            "patch job 7 is locked since …: only emails can still change, not name, stop",
            job_id=7,
            fields=["name", "stop"],
        )
    )
    assert isinstance(locked, Conflict)
    assert locked.message.endswith("not patchJobName, stopMethodId")
    assert locked.facts["fields"] == ["patchJobName", "stopMethodId"]
    named = translate(InvalidInput("unknown method 9: choose one of …", field="method"))
    assert named.message.startswith("patchJobMethodId: unknown method 9")
    assert (
        "applicationBuild[0].newApplicationBuildId"
        in translate(
            InvalidInput("builds[0].new: profile x belongs to another application")
        ).message
    )
    assert isinstance(translate(NotFound("no fleet")), NotFound)
    assert translate(InvalidInput("emails: 'x' is not an e-mail address")).message.startswith(
        "email: 'x'"
    )
