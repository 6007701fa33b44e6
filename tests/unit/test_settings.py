"""Unit tests for ``changeover.settings``: the patch-publishing settings."""

from __future__ import annotations

import pytest

from changeover.content.patch_index import PatchMethod
from changeover.errors import InvalidInput
from changeover.settings import load


def test_patch_methods_and_publish_budget_come_from_the_environment() -> None:
    default = load({})
    assert default.patch_methods == frozenset(PatchMethod)
    assert default.publish_budget_cpu_s == 90.0
    s = load({"CHANGEOVER_PATCH_METHODS": "zstd", "CHANGEOVER_PUBLISH_BUDGET_CPU_S": "30"})
    assert s.patch_methods == {PatchMethod.ZSTD} and s.publish_budget_cpu_s == 30.0
    both = load({"CHANGEOVER_PATCH_METHODS": " hdiffpatch , zstd"})
    assert both.patch_methods == frozenset(PatchMethod)


@pytest.mark.parametrize("value", ["hdiffpatch", "zstd,xdelta9", ",", "ZSTD"])
def test_patch_methods_must_be_known_and_include_zstd(value: str) -> None:
    with pytest.raises(InvalidInput, match="CHANGEOVER_PATCH_METHODS"):
        load({"CHANGEOVER_PATCH_METHODS": value})
