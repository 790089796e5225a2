"""Client disconnects cancel the generation down to the engine; a dead adapter is an SSE error, not a hang."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.edge.conftest import FAST, settled
from tests.support.edge import Edge, start_edge
from tests.support.processes import wait_serving
from tests.support.stacks import Stack, start_adapter, start_stack

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


@pytest.fixture
async def two_adapters(tmp_path: Path) -> AsyncIterator[tuple[Stack, Stack, Edge]]:
    """One vLLM simulator behind two adapters, and an edge routing demo-vllm to both."""
    first = await asyncio.to_thread(start_stack, "vllm", tmp_path, FAST)
    second_adapter = await asyncio.to_thread(
        start_adapter, "vllm", first.sim_url, tmp_path, "-second"
    )
    second = Stack("vllm", first.model, first.sim, second_adapter, first.options)
    await asyncio.to_thread(wait_serving, second_adapter, second.address)
    edge = await asyncio.to_thread(start_edge, tmp_path, {"vllm": [first.address, second.address]})
    try:
        yield first, second, edge
    finally:
        await asyncio.to_thread(edge.stop)
        await asyncio.to_thread(second_adapter.stop)
        await asyncio.to_thread(first.stop)


async def _serving_stream(stacks: tuple[Stack, Stack]) -> Stack:
    """The adapter with a generation in flight."""
    for stack in stacks:
        async with grpc.aio.insecure_channel(stack.address) as channel:
            load = await pb_grpc.InferenceServiceStub(channel).GetLoad(pb.GetLoadRequest())
            if load.adapter_in_flight:
                return stack
    raise AssertionError("no adapter is serving the stream")


async def test_killed_adapter_ends_the_stream_with_an_error_and_the_next_request_fails_over(
    two_adapters: tuple[Stack, Stack, Edge],
) -> None:
    first, second, edge = two_adapters
    client = edge.client()
    stream = await client.chat.completions.create(
        model="demo-vllm",
        messages=[{"role": "user", "content": "go"}],
        stream=True,
        extra_body=LONG,
    )
    received = 0
    failure: openai.APIError | None = None
    try:
        async for _chunk in stream:
            received += 1
            if received == 5:
                serving = await _serving_stream((first, second))
                serving.adapter.signal(signal.SIGKILL)
    except openai.APIError as error:  # the SSE error event, raised by the SDK
        failure = error
    assert received >= 5
    assert failure is not None, "the stream ended without reporting the lost backend"
    assert "backend" in failure.message.lower()
    survivor = second if serving is first else first
    for _ in range(3):  # every following request lands on the adapter that is left
        reply = await client.chat.completions.create(
            model="demo-vllm", messages=[{"role": "user", "content": "again"}], max_tokens=4
        )
        assert reply.choices[0].message.content
    async with grpc.aio.insecure_channel(survivor.address) as channel:
        assert (await pb_grpc.InferenceServiceStub(channel).GetLoad(pb.GetLoadRequest())).ready
    assert await edge.in_flight() == 0
