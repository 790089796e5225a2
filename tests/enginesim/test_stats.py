"""Each tracked request ends in exactly one counter and the gauges always come back down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import httpx
import pytest
from starlette.applications import Starlette

from switchyard.enginesim.scheduler import Overloaded, QueueFull
from switchyard.enginesim.serving import ClientDisconnected
from switchyard.enginesim.stats import RECENT, SimStats, stats_route

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _counts(stats: SimStats) -> tuple[int, int, int, int, int, int, int]:
    return (
        stats.requests, stats.completed, stats.aborted, stats.rejected, stats.failed,
        stats.in_flight, stats.open_streams,
    )  # fmt: skip


async def test_a_completed_stream() -> None:
    stats = SimStats()
    with stats.track("r1", TRACEPARENT, stream=True):
        assert (stats.in_flight, stats.open_streams) == (1, 1)
    assert _counts(stats) == (1, 1, 0, 0, 0, 0, 0)


async def test_a_cancelled_generation_is_aborted() -> None:
    stats = SimStats()

    async def generation() -> None:
        with stats.track("r1"):
            await asyncio.sleep(60)

    task = asyncio.get_running_loop().create_task(generation())
    await asyncio.sleep(0)
    assert stats.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _counts(stats) == (1, 0, 1, 0, 0, 0, 0)


async def test_a_stream_closed_early_is_aborted() -> None:
    stats = SimStats()

    async def body() -> AsyncGenerator[bytes]:
        with stats.track("r1", stream=True):
            for _ in range(10):
                yield b"chunk"

    stream = body()
    assert await anext(stream) == b"chunk"
    await stream.aclose()  # what a server does when the client goes away
    assert _counts(stats) == (1, 0, 1, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("error", "counts"),
    [
        (ClientDisconnected(), (1, 0, 1, 0, 0, 0, 0)),
        (QueueFull(), (1, 0, 0, 1, 0, 0, 0)),
        (Overloaded(), (1, 0, 0, 1, 0, 0, 0)),
        (ValueError("bad"), (1, 0, 0, 0, 1, 0, 0)),
    ],
)
async def test_errors_are_sorted(error: Exception, counts: tuple[int, ...]) -> None:
    stats = SimStats()
    with pytest.raises(type(error)), stats.track("r1", stream=True):
        raise error
    assert _counts(stats) == counts


def test_recent_requests_are_bounded() -> None:
    stats = SimStats()
    for i in range(RECENT + 10):
        with stats.track(f"r{i}", f"tp{i}"):
            pass
    assert len(stats.recent) == RECENT
    assert stats.recent[0].request_id == "r10"
    assert stats.recent[-1].traceparent == f"tp{RECENT + 9}"


async def test_the_stats_route_serves_a_snapshot() -> None:
    stats = SimStats()
    with stats.track("r1", TRACEPARENT):
        pass
    app = Starlette(routes=[stats_route(stats)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://sim") as c:
        response = await c.get("/sim/stats")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == stats.snapshot()
    assert body["completed"] == 1
    assert body["recent"] == [{"request_id": "r1", "traceparent": TRACEPARENT}]
