"""The deadline question (issue 24): what share of players a release kicks, by method and
bleed-off deadline, on a realistic player mix; and how fast the simulator answers.

The simulator is ``changeover.control.patchjobs.simulate``: the real method planners and
allocation rule in virtual time (what ``changeover patchjob simulate`` runs). Called
in-process here: the figures are the core's, not HTTP's.

* **Fleet:** ``--instances`` old-build instances of capacity 16 over three regions (ten per
  host), ``--players`` players spread over them, each session begun up to an hour ago; then
  ``--warm-up`` hours of players coming and going under the allocation rule of the case
  (packing or spreading) before the job starts, so the fleet has the shape that rule gives
  it (``simulate.warm_up``; not timed).
* **Players** (seed 002's mix): 85 % matches of about 20 minutes, 14 % hour-long sessions,
  1 % persistent sessions of about a day (a log-normal tail reaching several days, the
  servers players keep alive); arrivals follow a daily curve (a sine, the peak twice the
  trough) at the rate that keeps the online count steady; ``--friends`` of arrivals join a
  friend who is playing, possibly on an old, draining server; nobody leaves at a notice
  (the worst case for kicks).
* **Cases:** bleed-off with a 12 h deadline with and without friend joins, each with
  allocation packing players onto servers (Changeover's rule) and spreading them (the
  counterfactual: the emptiest server with room first); rolling and forced on the same
  fleet; then bleed-off over ``--deadlines`` to find the deadline that
  kicks at most 0.1 % and 0.01 % of the players (interpolated between the two deadlines
  around it, in log-log; "beyond" when the longest one still kicks more).
* **Share kicked** = players on a server stopped at its deadline or by a forced stop,
  over every player who played during the job (those at the start plus arrivals).
* **Scale:** one 1 h bleed-off of ``--scale-instances`` / ``--scale-players``, timed.

Changeover's allocation rule (newest build first, the fullest instance with room,
draining servers closed to all but friends) is the one the simulator runs; spreading is
the same rule with the last preference reversed (``allocation.Request.spread``), which
Server Allocate never uses.

Run ``python bench/rollout_sim.py --help``; ``make bench`` runs it with its defaults.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common import (
    BENCHMARKS_MD,
    clean_up_on_signals,
    load_average,
    load_note,
    log,
    machine_info,
    markdown_table,
    source_revision,
    write_section,
)

from changeover.control.patchjobs.knobs import DrainPolicy
from changeover.control.patchjobs.model import BuildPair, JobSpec, Method
from changeover.control.patchjobs.player_model import PlayerModel, SessionComponent
from changeover.control.patchjobs.simulate import (
    FleetSnapshot,
    SimInstance,
    SimResult,
    simulate,
    warm_up,
)

SECTION = "rollout-sim"
QUICK_ARGS = ["--instances", "30", "--players", "200", "--deadlines", "1,12"]
QUICK_ARGS += ["--scale-instances", "60", "--scale-players", "400", "--reference-instances", "40"]
SCALE_TARGET_S = 60.0
T0 = 1_700_006_400.0
"""A Tuesday, 00:00 UTC: the daily curve starts at midnight."""
HOUR = 3600.0
OLD, NEW = 100, 200
CAPACITY = 16
REGIONS = ("eu", "us", "ap")
MIX = (
    SessionComponent(0.85, 20 * 60.0, 0.6),
    SessionComponent(0.14, HOUR, 0.7),
    SessionComponent(0.01, 24 * HOUR, 1.0),
)
TARGETS = (0.001, 0.0001)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", type=int, default=500)
    p.add_argument("--players", type=int, default=5000)
    p.add_argument("--friends", type=float, default=0.1, help="share of friend joins")
    p.add_argument("--deadlines", default="1,3,6,12,24,48,96", help="hours, for bleed-off")
    p.add_argument("--scale-instances", type=int, default=10_000)
    p.add_argument("--scale-players", type=int, default=100_000)
    p.add_argument(
        "--reference-instances",
        type=int,
        default=2_000,
        help="size (10 players each) of the from-scratch reference run",
    )
    p.add_argument("--warm-up", type=float, default=6.0, help="hours before the job")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    return p.parse_args(argv)


def mean_session_s() -> float:
    return sum(c.share * c.median_s * math.exp(c.sigma**2 / 2) for c in MIX)


def players_model(online: int, friends: float) -> PlayerModel:
    """Arrivals keeping ``online`` players on average (Little's law), over a daily sine."""
    mean_rate = online / mean_session_s()
    curve = tuple(mean_rate * (1 + math.sin(2 * math.pi * (h - 9) / 24) / 3) for h in range(24))
    return PlayerModel(curve, MIX, friend_join_share=friends)


def fleet(instances: int, players: int, seed: int, at: float = T0) -> FleetSnapshot:
    rng = random.Random(seed)
    per, extra = divmod(players, instances)
    return FleetSnapshot(
        at=at,
        instances=tuple(
            SimInstance(
                instance_id=i + 1,
                fleet_id=1,
                host=f"h{i // 10}",
                region=REGIONS[i % len(REGIONS)],
                version_id=OLD,
                capacity=CAPACITY,
                session_starts=tuple(at - rng.uniform(0, HOUR) for _ in range(per + (i < extra))),
            )
            for i in range(instances)
        ),
    )


def job(method: Method, deadline_h: float) -> JobSpec:
    deadline = deadline_h * HOUR
    notices = tuple(n for n in (HOUR, 900.0, 300.0, 60.0) if n < deadline)
    return JobSpec(
        job_id=1,
        method=method,
        builds=(BuildPair(OLD, NEW),),
        fleet_ids=(1,),
        drain=DrainPolicy(deadline_s=deadline, notice_before_s=notices),
    )


def share(r: SimResult) -> float:
    """Kicked over every player who played during the job."""
    return r.kicked / max(1, r.players_at_start + r.arrivals)


def share_of_start(r: SimResult) -> float:
    """Kicked over the players online when the job started (those on old servers)."""
    return r.kicked / max(1, r.players_at_start)


def run_one(
    args: argparse.Namespace,
    method: Method,
    deadline_h: float,
    friends: float,
    packing: bool = True,
) -> tuple[SimResult, float]:
    spec, model = job(method, deadline_h), players_model(args.players, friends)
    # Warmed up so that the job still starts at midnight, whatever the warm-up.
    even = fleet(args.instances, args.players, args.seed, at=T0 - args.warm_up * HOUR)
    snapshot = warm_up(spec, even, model, args.warm_up, seed=args.seed, packing=packing)
    start = time.perf_counter()
    result = simulate(spec, snapshot, model, seed=args.seed, packing=packing)
    return result, time.perf_counter() - start


def needed_deadline(points: list[tuple[float, float]], target: float) -> str:
    """The deadline (hours) kicking ``target`` of players, interpolated in log-log."""
    for (h0, s0), (h1, s1) in itertools.pairwise(points):
        if s0 > target >= s1:
            if s1 <= 0:
                return f"≤ {h1:g} h"
            f = (math.log(target) - math.log(s0)) / (math.log(s1) - math.log(s0))
            return f"≈ {math.exp(math.log(h0) + f * (math.log(h1) - math.log(h0))):.0f} h"
    if points and points[0][1] <= target:
        return f"≤ {points[0][0]:g} h"
    return f"beyond {points[-1][0]:g} h" if points else "n/a"


def pct(x: float) -> str:
    return f"{100 * x:.3f} %"


def row(name: str, r: SimResult, seconds: float) -> list[str]:
    total = r.players_at_start + r.arrivals
    duration = f"{r.duration_s / HOUR:.1f} h" if r.duration_s is not None else "not done"
    return [
        name,
        f"{total:,}",
        f"{r.kicked:,}",
        pct(share(r)),
        pct(share_of_start(r)),
        duration,
        f"{seconds:.1f} s",
    ]


def report(args: argparse.Namespace) -> str:
    load_before = load_average()
    rows = []
    for name, method, friends, packing in (
        ("bleed-off 12 h, friend joins", Method.BLEED_OFF, args.friends, True),
        ("bleed-off 12 h, no friend joins", Method.BLEED_OFF, 0.0, True),
        ("bleed-off 12 h, spreading, friend joins", Method.BLEED_OFF, args.friends, False),
        ("bleed-off 12 h, spreading, no friend joins", Method.BLEED_OFF, 0.0, False),
        ("rolling (drain deadline 12 h)", Method.ROLLING, args.friends, True),
        ("forced", Method.FORCED, args.friends, True),
    ):
        log(f"[rollout-sim] {name}")
        rows.append(row(name, *run_one(args, method, 12, friends, packing)))
    sweep: list[tuple[float, float]] = []
    sweep_rows = []
    for h in sorted(float(x) for x in args.deadlines.split(",")):
        log(f"[rollout-sim] bleed-off {h:g} h")
        result, seconds = run_one(args, Method.BLEED_OFF, h, args.friends)
        sweep.append((h, share(result)))
        sweep_rows.append(row(f"bleed-off {h:g} h", result, seconds))
    log(f"[rollout-sim] scale: {args.scale_instances} instances, {args.scale_players} players")
    big = fleet(args.scale_instances, args.scale_players, args.seed)
    start = time.perf_counter()
    scaled = simulate(
        job(Method.BLEED_OFF, 1),
        big,
        players_model(args.scale_players, args.friends),
        seed=args.seed,
    )
    scale_s = time.perf_counter() - start
    ref = args.reference_instances
    log(f"[rollout-sim] reference: {ref} instances, incremental and from scratch")
    ref_s: list[float] = []
    ref_results = []
    for incremental in (True, False):
        start = time.perf_counter()
        ref_results.append(
            simulate(
                job(Method.BLEED_OFF, 1),
                fleet(ref, 10 * ref, args.seed),
                players_model(10 * ref, args.friends),
                seed=args.seed,
                incremental=incremental,
            )
        )
        ref_s.append(time.perf_counter() - start)
    if ref_results[0] != ref_results[1]:
        raise SystemExit("incremental and from-scratch planning disagree: a bug, not a figure")

    info = machine_info()
    headers = [
        "case",
        "players",
        "kicked",
        "of all",
        "of those at start",
        "job took",
        "simulated in",
    ]
    lines = [
        f"Command: `{args.invoked_as}` (source {source_revision()}); {info['cpus']} CPUs,"
        f" {info['cpu']}, Python {info['python']}, {info['date']}.",
        "",
        f"{args.instances:,} instances, {args.players:,} players online on average, friend"
        f" joins {args.friends:.0%} of arrivals, mean session {mean_session_s() / 60:.0f} min,"
        f" {args.warm_up:g} h of play before each job, seed {args.seed}:",
        "",
        markdown_table(headers, rows, "lrrrrrr"),
        "",
        "Bleed-off by deadline (friend joins on):",
        "",
        markdown_table(headers, sweep_rows, "lrrrrrr"),
        "",
        "Deadline needed: "
        + "; ".join(f"{pct(t)} kicked {needed_deadline(sweep, t)}" for t in TARGETS)
        + ". Roblox reports about 0.3 % kicked by its 12 h bleed-off.",
        "",
        f"Scale: a 1 h bleed-off of {args.scale_instances:,} instances and"
        f" {args.scale_players:,} players ({scaled.players_at_start + scaled.arrivals:,}"
        f" players in all) simulated in {scale_s:.1f} s (target: under"
        f" {SCALE_TARGET_S:.0f} s, {'met' if scale_s < SCALE_TARGET_S else 'NOT met'}).",
        f"Reference in the same run, {ref:,} instances and {10 * ref:,} players: planning"
        f" incrementally (the default, `strategies.memo`) {ref_s[0]:.1f} s, every pass from"
        f" scratch (`incremental=False`, as before it) {ref_s[1]:.1f} s,"
        f" {ref_s[1] / ref_s[0]:.1f}x; the two answers are equal, action for action.",
        "",
        '"Players" counts everyone who played during the job (at the start and arrivals);'
        ' "of all" divides the kicked by them, "of those at start" by the players online'
        " when the job started (on old servers, the ones at risk). The deadline needed is"
        ' read on "of all". "Spreading" is the counterfactual where allocation puts each'
        " player on the emptiest server with room instead of the fullest (Server Allocate"
        " always packs). "
        + load_note(
            load_before,
            load_average(),
            int(info["cpus"]),
            "makes the times longer (the shares do not depend on it: each run is"
            " deterministic from its seed)",
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None, *, invoked_as: str | None = None) -> int:
    args = parse_args(argv)
    args.invoked_as = (invoked_as or "python bench/rollout_sim.py " + " ".join(argv or [])).strip()
    body = report(args)
    write_section(
        args.out, SECTION, "### The deadline question (`bench/rollout_sim.py`)\n\n" + body
    )
    log(f"wrote section {SECTION} of {args.out}")
    return 0


if __name__ == "__main__":
    clean_up_on_signals()
    sys.exit(main(sys.argv[1:]))
