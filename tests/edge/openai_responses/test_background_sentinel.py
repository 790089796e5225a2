"""Background responses on Redis Sentinel: a failover while jobs run, and they complete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import openai
import pytest

from switchyard.edge.openai_responses.redis_store import response_key
from tests.edge.conftest import sim_stats
from tests.support.edge import Edge, KeySpec, start_edge
from tests.support.polling import eventually
from tests.support.redis_sentinel import RedisSentinelSet
from tests.support.redis_topology import sentinel_topology
from tests.support.stacks import Stack, options, start_stack

MODEL = "demo-vllm"
JOBS = 5


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    log_dir = tmp_path_factory.mktemp("background-sentinel")
    running = await asyncio.to_thread(start_stack, "vllm", log_dir, options(itl_s=0.002))
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


@pytest.fixture
async def edge(
    stack: Stack, redis_sentinel_set: RedisSentinelSet, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Edge]:
    log_dir = tmp_path_factory.mktemp("background-sentinel-edge")
    env = {
        "EDGE_RESPONSES_STORE": "redis",
        "EDGE_RESPONSES_REDIS_URL": redis_sentinel_set.url,
        "EDGE_JOBS_LEASE_S": "1",
        "EDGE_JOBS_CONCURRENCY_PER_MODEL": str(JOBS),
        "EDGE_REDIS_TIMEOUT_S": "2",
    }
    running = await asyncio.to_thread(
        start_edge, log_dir, {"vllm": [stack.address]}, keys=(KeySpec("full"),), env=env
    )
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


async def test_jobs_complete_across_a_sentinel_failover(
    edge: Edge, stack: Stack, redis_sentinel_set: RedisSentinelSet
) -> None:
    sdk = edge.client()
    before = await sim_stats(stack)
    async with stack.stalled(count=JOBS):
        created = [
            await sdk.responses.create(
                model=MODEL, input=f"Job {i}.", background=True, max_output_tokens=8
            )
            for i in range(JOBS)
        ]

        async def all_in_engine() -> bool:
            return bool((await sim_stats(stack))["requests"] - before["requests"] >= JOBS)

        await eventually(all_in_engine, what="every job running")
        await asyncio.to_thread(redis_sentinel_set.failover)

    async def ended(response_id: str) -> bool:
        try:
            response = await sdk.responses.retrieve(response_id)
        except openai.APIStatusError:  # the store's Redis still switching: not yet
            return False
        return response.status in ("completed", "incomplete")

    async def all_ended() -> bool:
        return all([await ended(response.id) for response in created])

    await eventually(all_ended, within_s=120, what="every job done")
    async with sentinel_topology(redis_sentinel_set).client() as client:
        for response in created:
            completions = await client.hget(response_key("tests", response.id), "completions")
            assert completions == b"1"
