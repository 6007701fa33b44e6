"""Run every benchmark and update BENCHMARKS.md: ``make bench`` (``python bench/run.py``).

``--quick`` runs each one at a tiny size to check the scripts work; it writes to
``bench/out/BENCHMARKS.md`` (git-ignored) so the published figures stay untouched.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from types import ModuleType

import allocation
import dashboard
import delta
import launcher_app
import patchjobs
import push_diff
import replicas
import rollout_sim
from common import REPO, clean_up_on_signals, log

BENCHMARKS: list[ModuleType] = [
    push_diff,
    delta,
    allocation,
    patchjobs,
    dashboard,
    launcher_app,
    rollout_sim,
    replicas,
]
"""Each module has ``main(argv, *, invoked_as) -> int``, ``QUICK_ARGS`` and ``SECTION``, and
may have ``RUN_ARGS``: what a full run passes instead of the script's own defaults."""

QUICK_OUT = REPO / "bench" / "out" / "BENCHMARKS.md"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run every benchmark; results go to BENCHMARKS.md.")
    p.add_argument("--quick", action="store_true", help=f"tiny sizes; write {QUICK_OUT}")
    args = p.parse_args(argv)
    invoked_as = shlex.join(["python", "bench/run.py", *(["--quick"] if args.quick else [])])
    failed = 0
    for bench in BENCHMARKS:
        if args.quick:
            extra = [*bench.QUICK_ARGS, "--out", str(QUICK_OUT)]
        else:
            extra = list(getattr(bench, "RUN_ARGS", []))
        log(f"== {bench.SECTION}")
        start = time.monotonic()
        status = int(bench.main(extra, invoked_as=invoked_as))
        log(f"== {bench.SECTION}: exit {status} after {time.monotonic() - start:.0f} s")
        failed += status != 0
    return 1 if failed else 0


if __name__ == "__main__":
    clean_up_on_signals()
    try:
        # Run as a script (bench/ is sys.path[0]); a failing benchmark fails `make bench`.
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; servers stopped and temporary data deleted")
        sys.exit(130)
