"""Unit tests for ``bench/allocation.py``: its HTTP parsing, statistics, load generator, verdict."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench_scripts import load_bench

alloc = load_bench("allocation")


def test_parse_head_reads_status_length_and_chunking() -> None:
    head = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nContent-Length: 42\r\n\r\n"
    assert alloc.parse_head(head) == (201, 42, False)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert alloc.parse_head(chunked) == (200, None, True)
    with pytest.raises(ValueError, match="status line"):
        alloc.parse_head(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_percentile_is_nearest_rank() -> None:
    values = list(range(100, 0, -1))  # unsorted on purpose
    assert alloc.percentile(values, 50) == 50
    assert alloc.percentile(values, 99) == 99
    assert alloc.percentile(values, 100) == 100
    assert alloc.percentile(values, 0) == 1
    assert alloc.percentile([7.0], 99) == 7.0
    assert alloc.percentile([1.0, 2.0], 50) == 1.0
    with pytest.raises(ValueError, match="no values"):
        alloc.percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        alloc.percentile([1.0], 101)


def test_check_instances_counts_over_allocation() -> None:
    rows = [
        {"observed_state": "ready", "capacity": 4, "players": 4},
        {"observed_state": "ready", "capacity": 4, "players": 5},
        {"observed_state": "starting", "capacity": 4, "players": 0},
    ]
    assert alloc.check_instances(rows) == (2, 12, 9, 1)
    assert alloc.max_requests(1000) == 900
    assert alloc.max_requests(1) == 1


def _check(**kw: Any) -> Any:
    base = {
        "instances": 10,
        "ready": 10,
        "places": 640,
        "players": 100,
        "over_instances": 0,
        "sessions": 100,
        "session_players": 100,
        "mismatched": 0,
        "allocated": 100,
    }
    return alloc.Check(**{**base, **kw})


def test_a_check_needs_matching_counts_and_no_over_allocation() -> None:
    assert _check().ok
    assert not _check(over_instances=1).ok
    assert not _check(sessions=101).ok  # a session the client never heard of
    assert not _check(players=99).ok
    assert not _check(mismatched=2).ok


def _phase(per_s: float, p99_ms: float, errors: int = 0) -> Any:
    return alloc.Phase(per_s, 1.0, p99_ms, 1000, errors, 1000, 1.0, 1.0, [])


def _run(db: str, per_s: float, p99_ms: float, **check: Any) -> Any:
    return alloc.Run(db, 1000, _phase(5000, 5), _phase(per_s, p99_ms), _check(**check), 1.0)


def test_verdict_names_each_miss() -> None:
    met = alloc.verdict([_run("sqlite", 2500, 10), _run("postgres", 2100, 20)])
    assert "**met**" in met
    missed = alloc.verdict([_run("sqlite", 2500, 10), _run("postgres", 150, 80, sessions=3)])
    assert "**not met**" in missed
    assert "postgres at 1,000 instances: 150 allocs/s, p99 80.0 ms, inconsistent" in missed
    assert "sqlite at" not in missed
    table = alloc.results_table([_run("sqlite", 2500, 10)])
    assert "`POST /allocations`" in table
    assert "0.50" in table  # 2,500 allocations/s over a 5,000 req/s baseline


def _fixed_run(db: str, closed_per_s: float, fixed_per_s: float, fixed_p99: float) -> Any:
    run = _run(db, closed_per_s, 40.0)  # the closed loop's own p99 is not the target's
    run.fixed, run.fixed_rate = _phase(fixed_per_s, fixed_p99), 2000.0
    return run


def test_the_verdict_reads_the_p99_at_the_target_rate_from_the_open_loop() -> None:
    met = alloc.verdict([_fixed_run("sqlite", 2900, 1995, 12.0)])
    assert "**met**" in met and "at 2,000/s offered" in met
    slow = alloc.verdict([_fixed_run("postgres", 2100, 1990, 36.7)])
    assert "postgres at 1,000 instances: p99 36.7 ms at 2,000/s offered" in slow
    behind = alloc.verdict([_fixed_run("postgres", 2100, 1500, 10.0)])
    assert "fell behind the offered rate" in behind
    # A closed loop below the rate, but the open loop kept up with 2,000/s offered: the
    # server answers the target's rate (32 connections over a slow batch are the bound).
    assert "**met**" in alloc.verdict([_fixed_run("sqlite", 1800, 1995, 10.0)])
    weak = alloc.verdict([_fixed_run("sqlite", 1800, 1500, 10.0)])
    assert "1,800 allocs/s" in weak and "fell behind" in weak
    low = _fixed_run("sqlite", 2900, 1000, 5.0)
    low.fixed_rate = 1000.0
    assert "only 1,000/s offered" in alloc.verdict([low])
    table = alloc.results_table([_fixed_run("sqlite", 2900, 1995, 12.0)])
    assert "`POST /allocations` at 2,000/s offered" in table


class _Server:
    """A tiny HTTP/1.1 keep-alive server answering every request with one fixed response."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.requests = 0
        self.bodies: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.bodies.append(await reader.readexactly(length))
                self.requests += 1
                writer.write(self.response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _drive_against(response: bytes, **spec: Any) -> tuple[Any, _Server]:
    fake = _Server(response)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await alloc.drive(alloc.LoadSpec(url=f"http://127.0.0.1:{port}", **spec))
    finally:
        server.close()
        await server.wait_closed()
    return result, fake


def test_the_load_generator_counts_every_answer_exactly() -> None:
    ok = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}"
    result, fake = asyncio.run(
        _drive_against(
            ok,
            method="POST",
            path="/api/v1/allocations",
            expect=201,
            body_template='{"players": ["p-{n}"]}',
            token="cho_1_x",
            concurrency=4,
            warmup_s=0.0,
            duration_s=5.0,
            max_requests=50,
        )
    )
    assert result.transport_errors == 0
    assert result.statuses == {"201": 50} and fake.requests == 50
    assert result.measured == len(result.latencies_ms) == 50
    assert result.measured_errors == 0 and result.per_s > 0
    assert sorted(fake.bodies) == sorted(b'{"players": ["p-%d"]}' % n for n in range(50))


def test_the_load_generator_reads_chunked_answers_and_counts_errors() -> None:
    chunked = b"HTTP/1.1 409 Conflict\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfull!\r\n0\r\n\r\n"
    result, fake = asyncio.run(
        _drive_against(
            chunked,
            method="GET",
            path="/healthz",
            expect=200,
            concurrency=2,
            warmup_s=0.0,
            duration_s=5.0,
            max_requests=6,
        )
    )
    assert result.statuses == {"409": 6} and fake.requests == 6
    assert result.measured_errors == 6
    assert result.error_samples[0] == "409: full!"


def test_the_open_loop_sends_at_its_rate_and_counts_latency_from_when_each_was_due() -> None:
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
    result, fake = asyncio.run(
        _drive_against(
            ok,
            method="GET",
            path="/healthz",
            expect=200,
            concurrency=8,
            warmup_s=0.0,
            duration_s=1.0,
            rate=200.0,
        )
    )
    # 200 due in the second; a loaded machine may start a few late, never send extra.
    assert 150 <= fake.requests <= 200 and result.measured == fake.requests
    assert result.statuses == {"200": fake.requests} and result.transport_errors == 0
    assert 150 < result.per_s < 260


def test_the_open_loop_charges_a_slow_server_for_the_queue() -> None:
    async def scenario() -> Any:
        fake = _Server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            original = writer.write

            def late(data: bytes) -> None:  # 20 ms an answer, one connection: 50/s at most
                asyncio.get_running_loop().call_later(0.02, original, data)

            writer.write = late  # type: ignore[method-assign]
            await fake.handle(reader, writer)

        server = await asyncio.start_server(slow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            spec = alloc.LoadSpec(
                url=f"http://127.0.0.1:{port}",
                method="GET",
                path="/healthz",
                expect=200,
                concurrency=1,
                warmup_s=0.0,
                duration_s=0.5,
                rate=200.0,
            )
            return await alloc.drive(spec)
        finally:
            server.close()
            await server.wait_closed()

    result = asyncio.run(scenario())
    # Offered 200/s, answered ~50/s: the requests left waiting are charged their wait.
    assert result.per_s < 80
    assert alloc.percentile(result.latencies_ms, 99) > 200


def test_the_allocators_counters_are_read_from_a_metrics_page() -> None:
    page = "\n".join(
        [
            "# HELP changeover_allocator_batches_total Allocator transactions.",
            "# TYPE changeover_allocator_batches_total counter",
            'changeover_allocator_batches_total{run="together"} 40.0',
            'changeover_allocator_batches_total{run="apart"} 2.0',
            "changeover_allocator_requests_total 420.0",
            "changeover_allocator_busy_seconds_total 0.21",
            "changeover_allocator_busy_seconds_created 1.7e+09",
            'changeover_allocations_total{result="ok"} 400.0',
        ]
    )
    assert alloc.allocator_counters(page) == {"requests": 420.0, "batches": 42.0, "busy_s": 0.21}
    assert alloc.allocator_counters("") == {"requests": 0.0, "batches": 0.0, "busy_s": 0.0}


def test_a_phase_reports_the_mean_batch_time_and_how_busy_the_allocator_was() -> None:
    result = alloc.LoadResult(measured=100, seconds=1.0, latencies_ms=[1.0] * 100)
    grew = {"requests": 100.0, "batches": 20.0, "busy_s": 0.1, "wall_s": 0.5}
    phase = alloc._phase(result, 0.05, 201, grew)
    assert phase.batch_ms == pytest.approx(5.0)
    assert phase.busy_share == pytest.approx(0.2)
    healthz = alloc._phase(result, 0.05, 200, dict.fromkeys(grew, 0.0) | {"wall_s": 0.5})
    assert (healthz.batch_ms, healthz.busy_share) == (None, None)


def test_the_table_shows_the_baseline_at_the_offered_rate_beside_the_allocations() -> None:
    run = _fixed_run("postgres", 2100, 1995, 30.0)
    run.baseline_fixed = _phase(1998, 27.5)
    table = alloc.results_table([run])
    rows = [line for line in table.splitlines() if "offered" in line]
    assert "`GET /healthz` at 2,000/s offered" in rows[0] and "27.5" in rows[0]
    assert "`POST /allocations` at 2,000/s offered" in rows[1] and "30.0" in rows[1]
    # Without an open-loop phase there is no such row.
    assert "`GET /healthz` at" not in alloc.results_table([_run("sqlite", 2500, 10)])
