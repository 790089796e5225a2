"""Injected stalls: requests that stop producing tokens until the fault is cleared."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette

from switchyard.enginesim.faults import Faults
from switchyard.enginesim.scheduler import LatencyModel, Scheduler
from switchyard.enginesim.vllm.flags import parse
from switchyard.enginesim.vllm.routes import create_app
from tests.enginesim.sglang.conftest import make_app as sglang_app
from tests.enginesim.tgi.conftest import make_app as tgi_app
from tests.enginesim.vllm.conftest import FAST, MODEL, argv
from tests.support.polling import eventually


async def _collect(scheduler: Scheduler, items: list[int], out: list[int]) -> None:
    async for item in scheduler.pace(items):
        out.append(item)  # noqa: PERF401 (one by one: the test watches progress)


def test_no_fault_stalls_nothing() -> None:
    assert Faults().claim(100) is None


def test_only_requests_past_the_stall_point_stall_and_count() -> None:
    faults = Faults()
    faults.set_stall(3, count=2)
    assert faults.claim(3) is None  # ends before the stall point: unaffected, not counted
    assert faults.claim(10) == 3
    assert faults.claim(4) == 3
    assert faults.claim(10) is None  # used up
    assert faults.snapshot()["stall_after"] is None


def test_invalid_stalls_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid stall"):
        Faults().set_stall(-1)
    with pytest.raises(ValueError, match="invalid stall"):
        Faults().set_stall(1, count=0)


async def test_a_stream_stalls_after_n_items_until_cleared() -> None:
    scheduler = Scheduler(4, latency=LatencyModel())
    scheduler.faults.set_stall(2)
    out: list[int] = []
    task = asyncio.create_task(_collect(scheduler, list(range(5)), out))
    await eventually(lambda: scheduler.faults.stalled == 1, what="stalled")
    assert out == [0, 1]
    scheduler.faults.clear()
    await asyncio.wait_for(task, 30)
    assert out == [0, 1, 2, 3, 4]
    assert scheduler.faults.snapshot() == {
        "stall_after": None,
        "count": None,
        "stalled": 0,
        "stalls": 1,
    }


async def test_a_cancelled_stalled_stream_leaves_no_stall_behind() -> None:
    scheduler = Scheduler(4)
    scheduler.faults.set_stall(0)
    out: list[int] = []
    task = asyncio.create_task(_collect(scheduler, [1, 2], out))
    await eventually(lambda: scheduler.faults.stalled == 1, what="stalled")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert out == []
    assert scheduler.faults.stalled == 0


async def test_a_whole_generation_stalls_too() -> None:
    scheduler = Scheduler(4)
    scheduler.faults.set_stall(1, count=1)
    sleeper = asyncio.create_task(scheduler.sleep_generation(5))
    await eventually(lambda: scheduler.faults.stalled == 1, what="stalled")
    assert not sleeper.done()
    scheduler.faults.clear()
    await asyncio.wait_for(sleeper, 30)


async def test_the_route_sets_shows_and_clears_a_stall() -> None:
    app = create_app(parse(argv(*FAST)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        assert (await client.get("/sim/faults")).json()["stall_after"] is None
        bad = await client.post("/sim/faults", json={"stall_after": -1})
        assert bad.status_code == 400
        assert bad.json()["error"][0]["loc"] == ["stall_after"]
        set_ = await client.post("/sim/faults", json={"stall_after": 0, "count": 1})
        assert set_.json() == {"stall_after": 0, "count": 1, "stalled": 0, "stalls": 0}

        body = {"model": MODEL, "prompt": "go", "max_tokens": 8, "ignore_eos": True}
        request = asyncio.create_task(client.post("/v1/completions", json=body))

        async def stalled() -> bool:
            return bool((await client.get("/sim/faults")).json()["stalled"])

        await eventually(stalled, what="the request stalled")
        assert not request.done()
        cleared = await client.delete("/sim/faults")
        assert cleared.json()["stall_after"] is None
        response = await asyncio.wait_for(request, 30)
        assert response.status_code == 200
        assert response.json()["usage"]["completion_tokens"] == 8


def _front_ends() -> dict[str, Starlette]:
    return {
        "vllm": create_app(parse(argv(*FAST))),
        "sglang": sglang_app(),
        "tgi": tgi_app(),
    }


@pytest.mark.parametrize("engine", ["vllm", "sglang", "tgi"])
async def test_every_front_end_serves_the_faults_route(engine: str) -> None:
    app = _front_ends()[engine]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as client:
        response = await client.post("/sim/faults", json={"stall_after": 2})
        assert response.json()["stall_after"] == 2
        assert (await client.delete("/sim/faults")).json()["stall_after"] is None
