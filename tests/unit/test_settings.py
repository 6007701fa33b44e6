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
    every = load({"CHANGEOVER_PATCH_METHODS": " hdiffpatch , zstd,hdiffpatch-lzma2,zstd-runs"})
    assert every.patch_methods == frozenset(PatchMethod)
    older = load({"CHANGEOVER_PATCH_METHODS": "zstd,hdiffpatch"})  # what older launchers know
    assert older.patch_methods == {PatchMethod.ZSTD, PatchMethod.HDIFFPATCH}


@pytest.mark.parametrize("value", ["hdiffpatch", "zstd,xdelta9", ",", "ZSTD"])
def test_patch_methods_must_be_known_and_include_zstd(value: str) -> None:
    with pytest.raises(InvalidInput, match="CHANGEOVER_PATCH_METHODS"):
        load({"CHANGEOVER_PATCH_METHODS": value})


def test_lost_hosts_are_replaced_after_a_setting_of_at_least_ten_seconds() -> None:
    assert load({}).replace_lost_after_s == 120.0
    assert load({"CHANGEOVER_REPLACE_LOST_AFTER_S": "30"}).replace_lost_after_s == 30.0
    with pytest.raises(InvalidInput, match="at least 10 seconds"):
        load({"CHANGEOVER_REPLACE_LOST_AFTER_S": "5"})
