"""One gate for the tests that need something a machine may lack (imported as ``gates``).

On a developer's machine a missing piece skips the tests that need it, with the reason
printed. Under CI (``CI`` set, as every CI service sets it) it fails them instead: a CI
run that skipped them would pass without having tested what they test. A CI machine that
really cannot have a piece (no root for a tmpfs mount, say) names it in
``CHANGEOVER_TEST_WITHOUT`` (comma-separated names from ``NEEDS``), and only then are
those tests skipped there too, still with the reason printed.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

NEEDS = frozenset({"postgresql", "chromium", "tmpfs", "sparse-files", "libzstd", "pyinstaller"})


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def declared_missing() -> set[str]:
    """What ``CHANGEOVER_TEST_WITHOUT`` says this machine cannot have."""
    names = {n.strip() for n in os.environ.get("CHANGEOVER_TEST_WITHOUT", "").split(",")}
    return names - {""}


def unavailable(need: str, reason: str) -> NoReturn:
    """Skip (or, under CI, fail) the calling test: ``need`` is missing for ``reason``."""
    if need not in NEEDS:
        raise ValueError(f"unknown need {need!r}: one of {sorted(NEEDS)}")
    if under_ci() and need not in declared_missing():
        pytest.fail(
            f"{need} is required under CI: {reason} (if this CI machine cannot have it,"
            f" add {need} to CHANGEOVER_TEST_WITHOUT)",
            pytrace=False,
        )
    pytest.skip(f"no {need} here: {reason}")
