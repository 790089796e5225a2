"""Two edge processes on a Sentinel URL and on a Cluster URL (EDGE_REDIS_URL): they share
a key's limits, the response cache and the Responses store with its background jobs
(a job taken by either, one cancelled from the other edge on Cluster), and a Sentinel
failover under traffic, or while jobs run, is followed without restarting either edge.

One pair of edges per topology for the whole module: each test uses keys and jobs of its
own. (Jobs on one server, edges killed and stopped: `openai_responses/test_background.py`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import openai
import pytest

from switchyard.edge.openai_responses.redis_store import response_key
from tests.edge.conftest import sim_stats
from tests.support.edge import Edge, KeySpec, start_edge, write_keys
from tests.support.polling import eventually
from tests.support.processes import started_together
from tests.support.redis_sentinel import RedisSentinelSet
from tests.support.redis_topology import RedisTopology, topology
from tests.support.stacks import Stack

RPM = 20
#: Key names of this module's own: the session's Redis servers are shared.
RUN = uuid.uuid4().hex[:8]
BURST, ROOMY = f"burst-{RUN}", f"roomy-{RUN}"
KEYS = (KeySpec(BURST, rpm=RPM), KeySpec(ROOMY, rpm=100_000))
CLOCK_SKEW_S = 0.002
ENV = {
    # About sharing, not latency: a busy machine must not turn slow answers into
    # fail-closed 503s. The cache shares the limiter's URL; the Responses store is given
    # it as its own (EDGE_RESPONSES_REDIS_URL).
    "EDGE_REDIS_TIMEOUT_S": "2",
    "EDGE_CACHE": "redis",
    "EDGE_RESPONSES_STORE": "redis",
}
#: Background jobs at once, in the failover test.
JOBS = 5
JOBS_ENV = {
    # Short leases: a job whose renewal the failover broke is taken over within seconds.
    "sentinel": {"EDGE_JOBS_LEASE_S": "1", "EDGE_JOBS_CONCURRENCY_PER_MODEL": str(JOBS)},
    # A lease no test waits out: a cancel must reach the running job by pub/sub.
    "cluster": {"EDGE_JOBS_LEASE_S": "600"},
}


@dataclass
class Pair:
    redis: RedisTopology
    edges: list[Edge]


@pytest.fixture(scope="module", params=["sentinel", "cluster"])
async def pair(
    request: pytest.FixtureRequest,
    engines: dict[str, Stack],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Pair]:
    redis = topology(request, request.param)
    log_dir = tmp_path_factory.mktemp(f"edges-on-{redis.kind}")
    keyring = write_keys(log_dir, KEYS)
    endpoints = {e: [s.address] for e, s in engines.items()}
    env = {**ENV, **JOBS_ENV[redis.kind], "EDGE_RESPONSES_REDIS_URL": redis.url}
    starts = (
        functools.partial(
            start_edge,
            log_dir,
            endpoints,
            redis_url=redis.url,
            name=f"edge-{redis.kind}-{i}",
            keyring=keyring,
            env=env,
        )
        for i in range(2)
    )
    async with started_together(*starts) as edges:
        yield Pair(redis, edges)


async def _complete(
    client: httpx.AsyncClient, edge: str, key: str, prompt: str, request_id: str = ""
) -> httpx.Response:
    return await client.post(
        f"{edge}/v1/completions",
        json={"model": "demo-vllm", "prompt": prompt, "max_tokens": 1, "temperature": 0},
        headers={
            "authorization": f"Bearer {key}",
            "x-request-id": request_id or uuid.uuid4().hex,
        },
    )


async def test_a_burst_across_two_edges_admits_the_limit_once(pair: Pair) -> None:
    key = pair.edges[0].keys[BURST]
    targets = itertools.cycle(e.url for e in pair.edges)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
        started = time.monotonic()
        responses = await asyncio.gather(
            *(
                _complete(client, url, key, f"burst {i}")
                for i, url in zip(range(RPM * 3), targets, strict=False)
            )
        )
        elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    admitted = statuses.count(200)
    refilled = math.floor((elapsed + CLOCK_SKEW_S) / (60 / RPM))
    assert RPM <= admitted <= RPM + refilled, (admitted, elapsed, pair.redis.kind)
    assert set(statuses) == {200, 429}


async def test_a_response_cached_by_one_edge_is_a_hit_on_the_other(pair: Pair) -> None:
    key = pair.edges[0].keys[ROOMY]
    prompt, request_id = f"cache me {uuid.uuid4().hex}", uuid.uuid4().hex
    async with httpx.AsyncClient(timeout=30) as client:
        first = await _complete(client, pair.edges[0].url, key, prompt, request_id)
        # The entry is written after the answer; the edge logs the request's record last.
        await pair.edges[0].record(request_id)
        second = await _complete(client, pair.edges[1].url, key, prompt)
    assert (first.status_code, second.status_code) == (200, 200)
    header = "x-switchyard-cache"
    assert (first.headers.get(header), second.headers.get(header)) == ("miss", "hit")
    assert second.json()["choices"] == first.json()["choices"]


@dataclass
class Load:
    """Requests to the edges in turn, one at a time, until stopped: their statuses."""

    edges: list[Edge]
    key: str
    statuses: list[int] = field(default_factory=list)
    stopping: bool = False

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            for i in itertools.count():
                if self.stopping:
                    return
                edge = self.edges[i % len(self.edges)]
                response = await _complete(client, edge.url, self.key, f"load {i}")
                self.statuses.append(response.status_code)

    async def answered(self, more: int) -> None:
        """Until `more` further requests are answered 200."""
        target = self.statuses.count(200) + more
        await eventually(lambda: self.statuses.count(200) >= target, what=f"{more} more 200s")


@pytest.mark.parametrize("pair", ["sentinel"], indirect=True)
async def test_a_sentinel_failover_under_traffic_is_followed_by_both_edges(
    pair: Pair, request: pytest.FixtureRequest
) -> None:
    # (A lost cluster master, its replica promoted: tests/edge/test_redis_pool.py.)
    sentinels: RedisSentinelSet = request.getfixturevalue("redis_sentinel_set")
    pids = [e.service.process.pid for e in pair.edges]
    load = Load(pair.edges, pair.edges[0].keys[ROOMY])
    task = asyncio.create_task(load.run())
    try:
        await load.answered(10)
        await asyncio.to_thread(sentinels.failover)
        await load.answered(20)  # both edges (they alternate), on the new master
    finally:
        load.stopping = True
        try:
            await asyncio.wait_for(asyncio.shield(task), 30)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    # Nothing but answers (a 503 while the limiter could not reach Redis: fail closed).
    assert set(load.statuses) <= {200, 503}, sorted(set(load.statuses))
    assert [e.service.process.pid for e in pair.edges] == pids
    assert all(e.service.alive() for e in pair.edges)


# -- Background responses (the Responses store and its jobs on the pair's topology) ---------


@pytest.mark.parametrize("pair", ["cluster"], indirect=True)
async def test_a_job_runs_and_one_is_cancelled_from_another_edge(
    pair: Pair, engines: dict[str, Stack]
) -> None:
    stack = engines["vllm"]
    first, second = (edge.client(ROOMY) for edge in pair.edges)
    done = await first.responses.create(
        model="demo-vllm", input="Hello.", background=True, max_output_tokens=8
    )

    async def finished() -> bool:
        response = await second.responses.retrieve(done.id)
        return response.status in ("completed", "incomplete")

    await eventually(finished, what="the job done")
    before = await sim_stats(stack)
    async with stack.stalled(count=1):
        held = await first.responses.create(
            model="demo-vllm", input="Go on.", background=True, max_output_tokens=500
        )

        async def in_engine() -> bool:
            return bool((await sim_stats(stack))["in_flight"] > before["in_flight"])

        await eventually(in_engine, what="the job held in the engine")
        cancelled = await second.responses.cancel(held.id)
        assert cancelled.status == "cancelled"

        async def aborted() -> bool:
            return bool((await sim_stats(stack))["aborted"] > before["aborted"])

        await eventually(aborted, what="the engine's generation aborted")


@pytest.mark.parametrize("pair", ["sentinel"], indirect=True)
async def test_jobs_complete_across_a_sentinel_failover(
    pair: Pair, engines: dict[str, Stack], request: pytest.FixtureRequest
) -> None:
    sentinels: RedisSentinelSet = request.getfixturevalue("redis_sentinel_set")
    stack = engines["vllm"]
    sdk = pair.edges[0].client(ROOMY)
    before = await sim_stats(stack)
    async with stack.stalled(count=JOBS):
        created = [
            await sdk.responses.create(
                model="demo-vllm", input=f"Job {i}.", background=True, max_output_tokens=8
            )
            for i in range(JOBS)
        ]

        async def all_in_engine() -> bool:
            return bool((await sim_stats(stack))["requests"] - before["requests"] >= JOBS)

        await eventually(all_in_engine, what="every job running")
        await asyncio.to_thread(sentinels.failover)

    async def ended(response_id: str) -> bool:
        try:
            response = await sdk.responses.retrieve(response_id)
        except openai.APIStatusError:  # the store's Redis still switching: not yet
            return False
        return response.status in ("completed", "incomplete")

    async def all_ended() -> bool:
        return all([await ended(response.id) for response in created])

    await eventually(all_ended, within_s=120, what="every job done")
    async with pair.redis.client() as client:
        for response in created:
            completions = await client.hget(response_key("tests", response.id), "completions")
            assert completions == b"1"
