"""A client that goes away aborts its request, streamed or not, over a real connection."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.enginesim.sglang.conftest import SLOW, engine_of, live, make_app
from tests.support.polling import eventually

LONG = {"text": "hello", "sampling_params": {"max_new_tokens": 200, "ignore_eos": True}}
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200, "ignore_eos": True}


@pytest.mark.parametrize(
    ("path", "body"), [("/generate", LONG), ("/v1/chat/completions", CHAT)], ids=["native", "chat"]
)
async def test_dropped_streams_are_aborted(path: str, body: dict[str, object]) -> None:
    app = make_app(*SLOW, "--enable-metrics")
    engine = engine_of(app)
    async with live(app) as url, httpx.AsyncClient(base_url=url) as client:
        for _ in range(3):
            async with client.stream("POST", path, json={**body, "stream": True}) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        break  # leave after the first event
        await eventually(lambda: engine.stats.aborted == 3)
        await eventually(lambda: engine.stats.open_streams == 0)
        metrics = (await client.get("/metrics")).text
    assert engine.stats.in_flight == 0
    assert engine.running == 0
    assert (
        'sglang:num_aborted_requests_total{engine_type="unified",model_name="demo"} 3.0' in metrics
    )


@pytest.mark.parametrize(
    ("path", "body"), [("/generate", LONG), ("/v1/chat/completions", CHAT)], ids=["native", "chat"]
)
async def test_a_dropped_unary_request_is_aborted(path: str, body: dict[str, object]) -> None:
    app = make_app(*SLOW)
    engine = engine_of(app)
    async with live(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        # Leave once the engine works on it (ten seconds of work), not after a fixed time:
        # a slow machine may not have sent it yet.
        call = asyncio.create_task(client.post(path, json=body))
        await eventually(lambda: engine.running == 1, what="the request running")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await eventually(lambda: engine.stats.aborted == 1)
    assert engine.stats.in_flight == 0
    assert engine.running == 0


async def test_the_traceparent_and_rid_are_recorded() -> None:
    app = make_app()
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with live(app) as url, httpx.AsyncClient(base_url=url) as client:
        await client.post(
            "/generate", json={**LONG, "rid": "traced"}, headers={"traceparent": traceparent}
        )
        await client.post(
            "/v1/chat/completions",
            json={**CHAT, "rid": "chat-traced"},
            headers={"traceparent": traceparent},
        )
        recent = (await client.get("/sim/stats")).json()["recent"]
    assert {"request_id": "traced", "traceparent": traceparent} in recent
    assert {"request_id": "chat-traced", "traceparent": traceparent} in recent


async def test_many_streams_leave_nothing_open() -> None:
    app = make_app("--sim-ttft", "0", "--sim-itl", "0.001")
    engine = engine_of(app)
    async with live(app) as url, httpx.AsyncClient(base_url=url) as client:

        async def one(i: int) -> None:
            body = {**LONG, "sampling_params": {"max_new_tokens": 20}, "stream": True}
            async with client.stream("POST", "/generate", json=body) as response:
                async for _ in response.aiter_lines():
                    if i % 2:
                        break

        await asyncio.gather(*(one(i) for i in range(20)))
        await eventually(lambda: engine.stats.open_streams == 0 and engine.stats.in_flight == 0)
    assert engine.stats.requests == 20
    assert engine.stats.completed + engine.stats.aborted == 20


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "unary"])
async def test_a_client_that_leaves_aborts_every_sample_of_n(stream: bool) -> None:
    app = make_app(*SLOW)
    engine = engine_of(app)
    body = {**CHAT, "n": 3, "rid": "mine", "stream": stream}
    async with live(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        call = asyncio.create_task(client.post("/v1/chat/completions", json=body))
        await eventually(lambda: engine.running == 3, what="the three samples running")
        # SGLang gives the samples fresh rids: an abort by the caller's rid reaches none.
        assert (await client.post("/abort_request", json={"rid": "mine"})).status_code == 200
        assert engine.running == 3
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await eventually(lambda: engine.stats.aborted == 3)
    assert engine.running == 0
    ended = [rid for a in engine.aborts if a.source == "disconnect" for rid in a.ended]
    assert len(set(ended)) == 3
