"""The gate for environment-dependent tests: a skip on a developer's machine, a failure
under CI unless the CI machine declares it cannot have the piece."""

from __future__ import annotations

import pytest

from gates import unavailable


def test_outside_ci_a_missing_piece_skips_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no libzstd here: not installed"):
        unavailable("libzstd", "not installed")


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_under_ci_a_missing_piece_fails(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("CHANGEOVER_TEST_WITHOUT", "chromium")  # another piece
    with pytest.raises(pytest.fail.Exception, match="tmpfs is required under CI: needs root"):
        unavailable("tmpfs", "needs root")


def test_ci_false_is_not_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        unavailable("tmpfs", "needs root")


def test_under_ci_a_declared_missing_piece_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("CHANGEOVER_TEST_WITHOUT", "postgresql, tmpfs")
    with pytest.raises(pytest.skip.Exception, match="no tmpfs here"):
        unavailable("tmpfs", "needs root")


def test_an_unknown_need_is_a_mistake_in_the_test() -> None:
    with pytest.raises(ValueError, match="unknown need 'tmpfs2'"):
        unavailable("tmpfs2", "typo")
