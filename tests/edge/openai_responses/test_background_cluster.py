"""Background responses on Redis Cluster: jobs run, and a cancel reaches the running one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.edge.conftest import sim_stats
from tests.support.edge import Edge, KeySpec, start_edge, write_keys
from tests.support.polling import eventually
from tests.support.redis_cluster import RedisClusterSet
from tests.support.stacks import Stack, options, start_stack

MODEL = "demo-vllm"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    log_dir = tmp_path_factory.mktemp("background-cluster")
    running = await asyncio.to_thread(start_stack, "vllm", log_dir, options(itl_s=0.002))
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


@pytest.fixture
async def edges(
    stack: Stack, redis_cluster_set: RedisClusterSet, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Edge, Edge]]:
    log_dir = tmp_path_factory.mktemp("background-cluster-edges")
    env = {
        "EDGE_RESPONSES_STORE": "redis",
        "EDGE_RESPONSES_REDIS_URL": redis_cluster_set.url,
        # A lease no test waits out: the cancel must reach the running job by pub/sub.
        "EDGE_JOBS_LEASE_S": "600",
        "EDGE_REDIS_TIMEOUT_S": "2",
    }
    keyring = write_keys(log_dir, (KeySpec("full"),))  # one key for both edges
    started: list[Edge] = []
    try:
        for name in ("edge-c1", "edge-c2"):
            edge = await asyncio.to_thread(
                start_edge, log_dir, {"vllm": [stack.address]}, env=env, name=name, keyring=keyring
            )
            started.append(edge)
        yield started[0], started[1]
    finally:
        for edge in started:
            await asyncio.to_thread(edge.stop)


async def test_a_job_runs_and_one_is_cancelled_from_another_edge(
    edges: tuple[Edge, Edge], stack: Stack
) -> None:
    first, second = edges
    done = await first.client().responses.create(
        model=MODEL, input="Hello.", background=True, max_output_tokens=8
    )

    async def finished() -> bool:
        response = await second.client().responses.retrieve(done.id)
        return response.status in ("completed", "incomplete")

    await eventually(finished, what="the job done")
    before = await sim_stats(stack)
    async with stack.stalled(count=1):
        held = await first.client().responses.create(
            model=MODEL, input="Go on.", background=True, max_output_tokens=500
        )

        async def in_engine() -> bool:
            return bool((await sim_stats(stack))["in_flight"] > before["in_flight"])

        await eventually(in_engine, what="the job held in the engine")
        cancelled = await second.client().responses.cancel(held.id)
        assert cancelled.status == "cancelled"

        async def aborted() -> bool:
            return bool((await sim_stats(stack))["aborted"] > before["aborted"])

        await eventually(aborted, what="the engine's generation aborted")
