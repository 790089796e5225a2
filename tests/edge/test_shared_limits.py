"""Three edge processes share one Redis: a key's limits hold across all of them."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.edge import Edge, KeySpec, start_edge, write_keys
from tests.support.redis import RedisServer
from tests.support.stacks import Stack

RPM = 30
KEYS = (KeySpec("burst", rpm=RPM), KeySpec("metered", tpm=600))


@pytest.fixture(scope="module")
async def shared(
    engines: dict[str, Stack], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[list[Edge], RedisServer]]:
    log_dir = tmp_path_factory.mktemp("shared-limits")
    redis = RedisServer(log_dir)
    await asyncio.to_thread(redis.start)
    endpoints = {e: [s.address] for e, s in engines.items()}
    keyring = write_keys(log_dir, KEYS)
    edges: list[Edge] = []
    try:
        for i in range(3):
            edge = await asyncio.to_thread(
                start_edge,
                log_dir,
                endpoints,
                redis_url=redis.url,
                name=f"edge-{i}",
                keyring=keyring,
                # These tests are about sharing, not latency: a machine busy with other
                # tests must not turn slow Redis answers into fail-closed 503s.
                env={"EDGE_REDIS_TIMEOUT_S": "2"},
            )
            edges.append(edge)
        yield edges, redis
    finally:
        for edge in edges:
            await asyncio.to_thread(edge.stop)
        await asyncio.to_thread(redis.close)


def _body(max_tokens: int = 1) -> dict[str, object]:
    return {"model": "demo-vllm", "prompt": "count me", "max_tokens": max_tokens}


async def test_a_burst_across_three_edges_admits_the_limit_once(
    shared: tuple[list[Edge], RedisServer],
) -> None:
    edges, _ = shared
    key = edges[0].keys["burst"]
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=300)) as client:
        targets = itertools.cycle(e.url for e in edges)
        requests = [
            client.post(
                f"{url}/v1/completions", json=_body(), headers={"authorization": f"Bearer {key}"}
            )
            for url, _ in zip(targets, range(RPM * 4), strict=False)
        ]
        responses = await asyncio.gather(*requests)
    statuses = [r.status_code for r in responses]
    admitted = statuses.count(200)
    assert admitted <= RPM * 1.01, f"over-admitted: {admitted} > {RPM}"
    assert admitted >= RPM - 1, (
        f"under-admitted: {admitted}"
    )  # a request may refill in the burst's span
    assert set(statuses) == {200, 429}
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["x-ratelimit-limit-requests"] == str(RPM)
    assert int(refused.headers["retry-after"]) >= 1


async def test_tokens_are_charged_with_the_real_usage(
    shared: tuple[list[Edge], RedisServer],
) -> None:
    edges, _ = shared
    key = edges[0].keys["metered"]  # 600 tokens per minute: 10 per second come back
    remaining: list[int] = []
    used: list[int] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(4):  # alternate edges: the charge is shared
            response = await client.post(
                f"{edges[i % 3].url}/v1/completions",
                json={**_body(200), "seed": 3},
                headers={"authorization": f"Bearer {key}"},
            )
            assert response.status_code == 200, response.text
            remaining.append(int(response.headers["x-ratelimit-remaining-tokens"]))
            used.append(response.json()["usage"]["total_tokens"])
            # The correction lands just after the response; a real client's next request
            # comes later than this test's would.
            await asyncio.sleep(0.05)
    # Identical requests reserve the same amount; the next one therefore sees the real usage
    # of the previous one charged (not its 200-token reservation), give or take refill.
    for before, after, usage in zip(remaining, remaining[1:], used, strict=False):
        assert abs((before - after) - usage) <= 5, (remaining, used)
    assert max(used) < 150  # so a reservation-sized charge (over 200) would have been visible
