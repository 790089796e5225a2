"""Two edge processes on a Sentinel URL and on a Cluster URL (EDGE_REDIS_URL): they share
a key's limits and the response cache, and a Sentinel failover under traffic is followed
without restarting either edge."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.support.edge import Edge, KeySpec, start_edge, write_keys
from tests.support.polling import eventually
from tests.support.redis_sentinel import RedisSentinelSet
from tests.support.redis_topology import RedisTopology, topology
from tests.support.stacks import Stack

RPM = 20
#: Key names of this module's own: the session's Redis servers are shared.
RUN = uuid.uuid4().hex[:8]
BURST, ROOMY = f"burst-{RUN}", f"roomy-{RUN}"
KEYS = (KeySpec(BURST, rpm=RPM), KeySpec(ROOMY, rpm=100_000))
CLOCK_SKEW_S = 0.002


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
    edges: list[Edge] = []
    try:
        for i in range(2):
            edge = await asyncio.to_thread(
                start_edge,
                log_dir,
                endpoints,
                redis_url=redis.url,
                name=f"edge-{redis.kind}-{i}",
                keyring=keyring,
                # About sharing, not latency: a busy machine must not turn slow answers
                # into fail-closed 503s. The cache shares the limiter's URL.
                env={"EDGE_REDIS_TIMEOUT_S": "2", "EDGE_CACHE": "redis"},
            )
            edges.append(edge)
        yield Pair(redis, edges)
    finally:
        await asyncio.gather(*(asyncio.to_thread(e.stop) for e in edges))


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
