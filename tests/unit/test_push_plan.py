"""Unit tests for how a push groups missing files into requests (``changeover.push.plan``)."""

from __future__ import annotations

from typing import Any

from changeover.push import BATCH_FILE_MAX, BATCH_FILES, plan

LIMITS = {"bytes": 16 << 20, "files": 1024}


def item(i: int, size: int, offset: int | None = 0) -> dict[str, Any]:
    m: dict[str, Any] = {"sha256": f"{i:064x}", "size": size}
    if offset is not None:
        m["offset"] = offset
    return m


def test_small_files_are_batched_and_big_or_started_ones_streamed() -> None:
    small = [item(i, 50_000) for i in range(600)]
    big = item(1000, BATCH_FILE_MAX + 1)
    started = item(1001, 10, offset=5)
    jobs = plan([*small, big, started], LIMITS)
    batches = [j for j in jobs if j.batch]
    single = [j for j in jobs if not j.batch]
    assert sorted(m["sha256"] for j in batches for m in j.items) == sorted(
        m["sha256"] for m in small
    )
    assert all(len(j.items) <= BATCH_FILES for j in batches)
    assert all(j.size <= 8 << 20 for j in batches)
    assert [j.items for j in single] == [[big], [started]]
    assert [j.size for j in jobs] == sorted((j.size for j in jobs), reverse=True)


def test_the_servers_limits_cap_a_batch() -> None:
    jobs = plan([item(i, 1000) for i in range(10)], {"bytes": 2500, "files": 1024})
    assert [len(j.items) for j in jobs] == [2, 2, 2, 2, 2]
    jobs = plan([item(i, 10) for i in range(10)], {"bytes": 1 << 20, "files": 3})
    assert sorted(len(j.items) for j in jobs) == [1, 3, 3, 3]


def test_a_server_without_batches_gets_one_request_per_file() -> None:
    jobs = plan([item(i, 10, offset=None) for i in range(3)], None)
    assert [(j.batch, len(j.items)) for j in jobs] == [(False, 1)] * 3
    jobs = plan([item(i, 10) for i in range(3)], None)
    assert not any(j.batch for j in jobs)
