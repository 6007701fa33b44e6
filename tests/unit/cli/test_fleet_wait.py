"""``changeover fleet wait``'s rule: when a fleet runs exactly what it wants."""

from __future__ import annotations

from typing import Any

from changeover.cli.fleet import settling

FLEET = {"hosts": ["h1", "h2"], "instances_per_host": 1, "profile": "arena-v2"}


def row(profile: str = "arena-v2", state: str = "ready", **kw: Any) -> dict[str, Any]:
    return {"profile": profile, "state": state, "desired": "running", "players": 0, **kw}


def test_settled_once_every_host_runs_the_active_profile_and_nothing_else() -> None:
    assert settling(FLEET, [row(), row()]) is None
    assert settling(FLEET, [row(), row(state="starting")]) == "1 of 2 instance(s) of arena-v2 ready"
    old = row("arena-v1", desired="draining", players=3)
    assert settling(FLEET, [row(), row(), old]) == (
        "2 of 2 instance(s) of arena-v2 ready; 1 other(s) to stop (3 player(s) on them)"
    )


def test_a_build_machine_trial_s_instance_is_not_waited_for() -> None:
    trial = row("arena-v3", state="starting", trial_id=7)
    assert settling(FLEET, [row(), row(), trial]) is None
    same_profile = row(trial_id=8)
    assert settling(FLEET, [row(), row(), same_profile]) is None
    assert settling(FLEET, [row(), same_profile]) == "1 of 2 instance(s) of arena-v2 ready"
