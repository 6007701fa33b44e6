"""``bench/delta.py``'s targets, on made-up samples: the apply-time target holds the
launcher's own apply (its report's ``timings``) against decompress-and-write made
durable, and the whole update's wall clock is reported beside it."""

from __future__ import annotations

import pytest

from bench_scripts import load_bench

delta = load_bench("delta")


def results(apply_s: float, wall_s: float) -> tuple[object, object]:
    """Every method of both cases; decompress-and-write 1.0 s plain, 1.5 s durable."""
    r = delta.Results()
    for case in delta.OLD:
        for method in delta.METHODS:
            detail: dict[str, object] = {}
            seconds = 1.0
            if method == "launcher":
                seconds = wall_s
                detail = {"apply_s": apply_s}
            elif method == "full":
                detail = {"durable_s": 1.5}
            r.add(case, method, delta.Sample(seconds, 1000, detail))
    refs = delta.References(per_file=dict.fromkeys(delta.OLD, (2000, 2000)))
    return r, refs


@pytest.mark.parametrize(
    ("apply_s", "wall_s", "apply_met", "wall_met"),
    [(2.9, 3.1, True, False), (3.1, 2.9, False, True)],
)
def test_apply_target_is_the_launchers_apply_against_durable_decompress_and_write(
    apply_s: float, wall_s: float, apply_met: bool, wall_met: bool
) -> None:
    r, refs = results(apply_s, wall_s)
    assert delta.apply_ratios(r) == [(c, pytest.approx(apply_s / 1.5)) for c in delta.OLD]
    lines = delta.targets(r, refs)
    [apply_line] = [x for x in lines if x.startswith("- Apply within")]
    [wall_line] = [x for x in lines if x.startswith("- The whole update")]
    assert ("**met**" in apply_line) is apply_met
    assert ("**met**" in wall_line) is wall_met
    assert f"{apply_s / 1.5:.2f}x" in apply_line
    # Beside the durable reference, the plain one (no sync -f): the stricter ratio.
    assert f"{wall_s / 1.5:.2f}x" in wall_line and f"{wall_s / 1.0:.2f}x" in wall_line
