"""``changeover agent --ports``: a range that reaches into the kernel's ephemeral ports is
found (the agent warns of it), one outside is not."""

from __future__ import annotations

import pytest

from changeover.cli.agent import ephemeral_overlap


@pytest.mark.parametrize(
    ("ports", "kernel", "overlap"),
    [
        ((7000, 7999), "32768\t60999\n", None),
        ((32000, 32767), "32768\t60999", None),
        ((32000, 33000), "32768\t60999", (32768, 33000)),
        ((40000, 40020), "32768 60999", (40000, 40020)),
        ((60990, 61010), "32768\t60999", (60990, 60999)),
        ((7000, 7999), "", None),
        ((7000, 7999), "not numbers", None),
    ],
)
def test_ephemeral_overlap(
    ports: tuple[int, int], kernel: str, overlap: tuple[int, int] | None
) -> None:
    assert ephemeral_overlap(ports, kernel) == overlap
