"""An adapter killed in the middle of a stream: the client gets one SSE error event (not a
hang, not a truncated stream that looks complete), and the next requests are served by
the adapter that is left."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.reliability.helpers import Baseline, chat, read_stream
from tests.support.edge import Edge, start_edge
from tests.support.polling import TIMEOUT_S
from tests.support.processes import wait_serving
from tests.support.stacks import Stack, options, start_adapter, start_stack

LONG = chat(1000)


@pytest.fixture
async def two_adapters(tmp_path: Path) -> AsyncIterator[tuple[Stack, Stack, Edge]]:
    """One vLLM simulator behind two adapters, and an edge routing demo-vllm to both."""
    first = await asyncio.to_thread(start_stack, "vllm", tmp_path, options(itl_s=0.01))
    stacks = [first]
    edge: Edge | None = None
    try:
        adapter = await asyncio.to_thread(start_adapter, "vllm", first.sim_url, tmp_path, "-2")
        second = Stack("vllm", first.model, first.sim, adapter, first.options)
        stacks.append(second)
        await asyncio.to_thread(wait_serving, adapter, second.address)
        endpoints = {"vllm": [first.address, second.address]}
        edge = await asyncio.to_thread(start_edge, tmp_path, endpoints)
        yield first, second, edge
    finally:
        if edge is not None:
            await asyncio.to_thread(edge.stop)
        for stack in reversed(stacks):
            await asyncio.to_thread(stack.adapter.stop)
        await asyncio.to_thread(first.sim.stop)


async def _adapter_in_flight(stack: Stack) -> int:
    async with grpc.aio.insecure_channel(stack.address) as channel:
        load = await pb_grpc.InferenceServiceStub(channel).GetLoad(pb.GetLoadRequest(), timeout=2)
        return int(load.adapter_in_flight)


async def test_a_killed_adapter_ends_the_stream_with_an_error_event_then_fails_over(
    two_adapters: tuple[Stack, Stack, Edge],
) -> None:
    first, second, edge = two_adapters
    baseline = await Baseline.take(edge)
    streaming = asyncio.Event()
    # The engine (shared by both adapters) holds the stream after five tokens, so it is
    # still open when its adapter dies, however slow the machine.
    async with httpx.AsyncClient(timeout=30) as client, first.stalled(count=1, after=5):
        stream = asyncio.create_task(read_stream(client, edge, LONG, first_chunk=streaming))
        await asyncio.wait_for(streaming.wait(), TIMEOUT_S)
        serving = first if await _adapter_in_flight(first) else second
        serving.adapter.signal(signal.SIGKILL)
        outcome = await asyncio.wait_for(stream, TIMEOUT_S)

        assert outcome.status == 200
        assert outcome.text, "text arrived before the adapter died"
        assert outcome.error is not None, "the stream ended without reporting the lost backend"
        assert outcome.error["code"] == "service_unavailable"
        assert "backend" in outcome.error["message"].lower()
        assert not outcome.done  # an error event ends the stream: no [DONE] after it
        assert outcome.finish_reason is None

        survivor = second if serving is first else first
        for _ in range(5):  # every following request lands on the adapter that is left
            response = await client.post(
                f"{edge.url}/v1/chat/completions", json=chat(4), headers=edge.auth()
            )
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"]
    assert await _adapter_in_flight(survivor) == 0
    await baseline.settled()
