"""The rollout simulator's edge (issue 24): a simulate request, the live fleet and its
session history read from the database, and the answer as the API returns it.

The simulator itself (``simulate``) is pure; this module only reads. It takes a job body
exactly as ``POST /patchjobs`` does and checks it with create's own functions, so a body
create refuses is refused here with the same error; it touches nothing.

The snapshot holds every live instance of the job's fleets (any build) with a player per
seat of its open sessions (``reserved`` or ``connected``), the slots of their hosts, each
profile's image version number and capacity. Every live instance counts as ready: the
simulated agents start from a fleet at rest.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from changeover.control.builds.models import Version
from changeover.control.fleet.models import (
    GameSession,
    Host,
    Instance,
    Profile,
    Region,
    fleet_member,
)
from changeover.control.fleet.services import run_spec
from changeover.control.fleet.sessions import OPEN
from changeover.control.patchjobs import services, specs
from changeover.control.patchjobs.player_model import (
    DAY_S,
    EndedSession,
    PlayerModel,
    SessionComponent,
    fit_or_given,
)
from changeover.control.patchjobs.simulate import (
    COMPARED,
    FleetSnapshot,
    SimInstance,
    SimResult,
    compare_methods,
    estimate,
    spec_from_body,
)
from changeover.errors import InvalidInput

MAX_INSTANCES: Final = 20_000
"""A bigger fleet is simulated from the Python API or the benchmark, not in a request."""
MAX_RUNS: Final = 20
MAX_HISTORY: Final = 200_000
"""The most recent ended sessions a model is fitted from."""
MAX_ARRIVALS: Final = 50_000
"""Player arrivals one request may simulate, over all its runs: its work, hence its time,
is bounded whatever rates it gives."""
MAX_ACTIONS: Final = 500
"""Actions listed per answer (the count is always whole)."""


def snapshot(
    s: Session, fleet_ids: Sequence[int], profile_ids: Sequence[int], t: float
) -> FleetSnapshot:
    """The live instances of ``fleet_ids`` at ``t``, their players, hosts and builds.

    Raises:
        InvalidInput: more than ``MAX_INSTANCES`` instances.
    """
    rows = list(
        s.execute(
            select(Instance, Host.name, Host.slots, Region.name)
            .join(Host, Host.id == Instance.host_id)
            .join(Region, Region.id == Host.region_id)
            .where(
                Instance.fleet_id.in_(fleet_ids),
                fleet_member(),
                Instance.state != "stopped",
                Instance.desired != "stopped",
            )
            .order_by(Instance.id)
            .limit(MAX_INSTANCES + 1)
        )
    )
    if len(rows) > MAX_INSTANCES:
        raise InvalidInput(
            f"the fleets hold more than {MAX_INSTANCES} live instances: simulate them with "
            "the Python API (docs/patchjobs.md)",
            field="fleets",
        )
    seats: dict[int, list[float]] = defaultdict(list)
    ids = [i.id for i, *_ in rows]
    for chunk in range(0, len(ids), 1000):
        for instance_id, size, created_at, connected_at in s.execute(
            select(
                GameSession.instance_id,
                GameSession.size,
                GameSession.created_at,
                GameSession.connected_at,
            ).where(
                GameSession.instance_id.in_(ids[chunk : chunk + 1000]),
                GameSession.status.in_(OPEN),
            )
        ):
            seats[instance_id].extend([min(t, connected_at or created_at)] * size)
    profiles = {*profile_ids, *(i.profile_id for i, *_ in rows)}
    terms = {
        pid: (number, capacity)
        for pid, number, capacity in s.execute(
            select(Profile.id, Version.number, Profile.capacity)
            .join(Version, Version.id == Profile.version_id)
            .where(Profile.id.in_(profiles))
        )
    }
    return FleetSnapshot(
        at=t,
        instances=tuple(
            # A count the agent reported past the capacity is cut to it: the simulator
            # seats at most ``capacity`` players.
            SimInstance(
                i.id,
                i.fleet_id,
                host,
                region,
                i.profile_id,
                i.capacity,
                tuple(sorted(seats[i.id])[: i.capacity]),
            )
            for i, host, _slots, region in rows
        ),
        host_slots={host: slots for _i, host, slots, _r in rows if slots >= 1},
        version_numbers={pid: number for pid, (number, _cap) in terms.items()},
        capacity_of={pid: cap for pid, (_num, cap) in terms.items() if cap >= 1},
    )


def history(s: Session, fleet_ids: Sequence[int], t: float) -> list[EndedSession]:
    """The sessions of ``fleet_ids`` that were played and ended in the 7 days before ``t``."""
    rows = s.execute(
        select(GameSession.connected_at, GameSession.ended_at, GameSession.size)
        .where(
            GameSession.fleet_id.in_(fleet_ids),
            GameSession.ended_at >= t - 7 * DAY_S,
            GameSession.ended_at <= t,
            GameSession.connected_at.is_not(None),
        )
        .order_by(GameSession.ended_at.desc())
        .limit(MAX_HISTORY)
    )
    return [
        EndedSession(started, ended, max(1, size))
        for started, ended, size in rows
        if started is not None and ended is not None and ended > started
    ]


def player_model(raw: Mapping[str, Any] | None) -> PlayerModel | None:
    """The request's explicit player model, or None (fit one from the history)."""
    if raw is None:
        return None
    return PlayerModel(
        arrivals_per_s=tuple(raw["arrivals_per_s"]),
        sessions=tuple(
            SessionComponent(c["share"], c["median_s"], c.get("sigma", 0.0))
            for c in raw["sessions"]
        ),
        friend_join_share=raw.get("friend_join_share", 0.0),
        notice_leave_share=raw.get("notice_leave_share", 0.0),
    )


def simulate_job(s: Session, request: Mapping[str, Any], t: float) -> dict[str, Any]:
    """Answer a simulate request: ``job`` (a create body), optional ``players`` (an
    explicit model), ``seed``, ``runs``, ``compare`` (every method on the same fleet).

    Raises:
        InvalidInput, NotFound: what create would say of the job body; an absurd model;
            a fleet without enough history and no model; a fleet too big.
    """
    body = request["job"]
    specs.check_body(body)
    r = services.resolve(s, body)
    runs_of = {p.id: (p.name, run_spec(p)) for pair in r.builds for p in pair}
    pairs = [(old.id, new.id) for old, new in r.builds]
    fleet_ids = [f.id for f in r.fleets]
    spec = spec_from_body(body, pairs, fleet_ids, t, runs=runs_of)
    runs = request.get("runs", 5)
    if not 1 <= runs <= MAX_RUNS:
        raise InvalidInput(f"runs must be 1 to {MAX_RUNS}, got {runs}", field="runs")
    seed = request.get("seed", 0)
    fleet = snapshot(s, fleet_ids, [p for pair in pairs for p in pair], t)
    fitted = fit_or_given(history(s, fleet_ids, t), t, player_model(request.get("players")))
    compare = bool(request.get("compare", False))
    budget = MAX_ARRIVALS // (runs + (len(COMPARED) if compare else 0))
    spread = estimate(spec, fleet, fitted.model, runs=runs, seed=seed, max_arrivals=budget)
    answer: dict[str, Any] = {
        "at": t,
        "seed": seed,
        "model": {"source": fitted.source, "note": fitted.note},
        "fleet": {
            "instances": len(fleet.instances),
            "players": sum(len(i.session_starts) for i in fleet.instances),
        },
        "estimate": {
            "runs": runs,
            "duration_p50_s": spread.duration_p50_s,
            "duration_p90_s": spread.duration_p90_s,
            "kicked_p50": spread.kicked_p50,
            "kicked_p90": spread.kicked_p90,
            "unfinished": spread.unfinished,
            "first": result_dict(spread.runs[0]),
        },
        "methods": [],
    }
    if compare:
        by_method = compare_methods(
            spec, fleet, fitted.model, methods=COMPARED, seed=seed, max_arrivals=budget
        )
        answer["methods"] = [result_dict(r) for r in by_method.values()]
    return answer


def result_dict(r: SimResult) -> dict[str, Any]:
    return {
        "method": int(r.method),
        "method_name": r.method.label,
        "outcome": None if r.outcome is None else int(r.outcome),
        "outcome_name": None if r.outcome is None else r.outcome.label,
        "reason": r.reason,
        "duration_s": r.duration_s,
        "selected": r.selected,
        "players_at_start": r.players_at_start,
        "arrivals": r.arrivals,
        "moved_after_notice": r.moved_after_notice,
        "left_after_notice": r.left_after_notice,
        "kicked_at_deadline": r.kicked_at_deadline,
        "kicked_by_stop": r.kicked_by_stop,
        "refused": r.refused,
        "peak_extra_instances": r.peak_extra_instances,
        "extra_slots_needed": r.extra_slots_needed,
        "hosts_over_slots": list(r.hosts_over_slots),
        "reduced_capacity_s": r.reduced_capacity_s,
        "min_capacity_share": r.min_capacity_share,
        "region_finish_s": dict(r.region_finish_s),
        "starts_after_s": r.starts_after_s,
        "action_count": len(r.actions),
        "actions": [
            {"at_s": a.at_s, "kind": a.kind, "instance_id": a.instance_id}
            for a in r.actions[:MAX_ACTIONS]
        ],
    }
