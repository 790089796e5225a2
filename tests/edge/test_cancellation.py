"""Client disconnects cancel the generation down to the engine; a dead adapter is an SSE error, not a hang."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.edge.conftest import settled
from tests.support.edge import Edge
from tests.support.stacks import Stack

LONG = {"max_tokens": 1000, "ignore_eos": True}  # 1000 tokens at 2 ms: two seconds of stream


async def _aborted(stack: Stack) -> int:
    async with httpx.AsyncClient() as client:
        aborted: int = (await client.get(f"{stack.sim_url}/sim/stats")).json()["aborted"]
        return aborted


async def _until_aborted(stack: Stack, before: int) -> None:
    for _ in range(100):
        if await _aborted(stack) > before:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the engine never saw the abort")


@pytest.mark.parametrize("engine", ["vllm", "sglang"])  # engines with ignore_eos (a long stream)
async def test_client_leaving_a_stream_aborts_the_engine(
    edge: Edge, engines: dict[str, Stack], engine: str
) -> None:
    before = await _aborted(engines[engine])
    body = {
        "model": f"demo-{engine}",
        "messages": [{"role": "user", "content": "go"}],
        "stream": True,
        **LONG,
    }
    async with (
        httpx.AsyncClient() as client,
        client.stream(
            "POST", f"{edge.url}/v1/chat/completions", json=body, headers=edge.auth()
        ) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                break  # some text arrived: leave mid-stream
    await _until_aborted(engines[engine], before)
    await settled(edge, engines)


async def test_client_leaving_a_unary_request_aborts_the_engine(
    edge: Edge, engines: dict[str, Stack]
) -> None:
    before = await _aborted(engines["vllm"])
    body = {"model": "demo-vllm", "prompt": "go", **LONG}
    async with httpx.AsyncClient(timeout=0.5) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{edge.url}/v1/completions", json=body, headers=edge.auth())
    await _until_aborted(engines["vllm"], before)
    await settled(edge, engines)
