"""An engine that stops producing tokens (the simulator's injected stall): the edge's deadline
fires, the client gets a timeout (504 before the first byte, an SSE error event after it),
the stalled generation is abandoned, and the next requests are served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.reliability.helpers import Baseline, chat, read_stream
from tests.support.edge import Edge, start_edge
from tests.support.polling import eventually
from tests.support.stacks import Stack, options, start_stack

TIMEOUT_S = 1.5  # the edge's deadline per request; a normal request here takes ~50 ms


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Stack, Edge]]:
    log_dir = tmp_path_factory.mktemp("stall")
    engine = await asyncio.to_thread(start_stack, "vllm", log_dir, options(itl_s=0.002))
    env = {"EDGE_REQUEST_TIMEOUT_S": str(TIMEOUT_S)}
    try:
        edge = await asyncio.to_thread(start_edge, log_dir, {"vllm": [engine.address]}, env=env)
    except BaseException:
        await asyncio.to_thread(engine.stop)
        raise
    try:
        yield engine, edge
    finally:
        await asyncio.to_thread(edge.stop)
        await asyncio.to_thread(engine.stop)


async def _faults(client: httpx.AsyncClient, engine: Stack, method: str, **body: Any) -> Any:
    response = await client.request(method, f"{engine.sim_url}/sim/faults", json=body or None)
    assert response.status_code == 200, response.text
    return response.json()


async def _engine_idle(client: httpx.AsyncClient, engine: Stack) -> None:
    """The stalled generations were abandoned: nothing stalled or in flight at the engine."""

    async def idle() -> bool:
        faults = await _faults(client, engine, "GET")
        stats = (await client.get(f"{engine.sim_url}/sim/stats")).json()
        return bool(faults["stalled"] == stats["in_flight"] == stats["open_streams"] == 0)

    await eventually(idle, what="the engine rid of the stalled requests")


@pytest.fixture
async def stalling(stack: tuple[Stack, Edge]) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the scenario; the fault is cleared afterwards whatever happens."""
    engine, _ = stack
    async with httpx.AsyncClient(timeout=30) as client:
        try:
            yield client
        finally:
            await _faults(client, engine, "DELETE")


async def test_a_stall_before_the_first_token_is_a_504(
    stack: tuple[Stack, Edge], stalling: httpx.AsyncClient
) -> None:
    engine, edge = stack
    client = stalling
    baseline = await Baseline.take(edge)
    await _faults(client, engine, "POST", stall_after=0)
    for body in ({"model": "demo-vllm", "prompt": "go", "max_tokens": 8}, chat(8)):
        path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
        response = await client.post(f"{edge.url}{path}", json=body, headers=edge.auth())
        assert response.status_code == 504, response.text
        assert response.json()["error"]["code"] == "timeout"
    stream = await read_stream(client, edge, chat(8))  # nothing sent yet: still a plain 504
    assert stream.status == 504
    assert b'"timeout"' in stream.body

    await _faults(client, engine, "DELETE")
    await _engine_idle(client, engine)
    response = await client.post(
        f"{edge.url}/v1/chat/completions", json=chat(8), headers=edge.auth()
    )
    assert response.status_code == 200, response.text
    await baseline.settled()


async def test_a_stall_mid_stream_ends_it_with_a_timeout_error_event(
    stack: tuple[Stack, Edge], stalling: httpx.AsyncClient
) -> None:
    engine, edge = stack
    client = stalling
    baseline = await Baseline.take(edge)
    await _faults(client, engine, "POST", stall_after=5, count=1)
    outcome = await read_stream(client, edge, chat(50, logprobs=True))
    assert outcome.status == 200
    assert outcome.tokens == 5  # five tokens (in as many chunks as they came), then silence
    assert outcome.error is not None, "the stalled stream did not end with an error event"
    assert outcome.error["code"] == "timeout"
    assert not outcome.done
    assert outcome.finish_reason is None
    await _engine_idle(client, engine)

    after = await read_stream(client, edge, chat(50))  # the fault was for one request
    assert (after.status, after.done, after.finish_reason) == (200, True, "length")
    await baseline.settled()
