"""Three edge processes share one Redis: a key's limits hold across all of them."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.edge import Edge, KeySpec, start_edge, write_keys
from tests.support.redis import RedisServer
from tests.support.stacks import Stack

RPM = 30
TPM = 600
KEYS = (KeySpec("burst", rpm=RPM), KeySpec("metered", tpm=TPM))
#: Redis's clock (the limiter's) and this process's may disagree by a ms or two.
CLOCK_SKEW_S = 0.002


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
        started = time.monotonic()
        responses = await asyncio.gather(*requests)
        elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    admitted = statuses.count(200)
    # The whole allowance at once, plus one request per 60/RPM s the burst took (it takes
    # as long as the machine makes it): edges counting apart would admit far more.
    refilled = math.floor((elapsed + CLOCK_SKEW_S) / (60 / RPM))
    assert RPM <= admitted <= RPM + refilled, (admitted, elapsed)
    assert set(statuses) == {200, 429}
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["x-ratelimit-limit-requests"] == str(RPM)
    assert int(refused.headers["retry-after"]) >= 1


async def test_tokens_are_charged_with_the_real_usage(
    shared: tuple[list[Edge], RedisServer],
) -> None:
    edges, _ = shared
    key = edges[0].keys["metered"]
    remaining: list[int] = []
    used: list[int] = []
    sent: list[float] = []  # when each request left
    done: list[float] = []  # when its response came
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(4):  # alternate edges: the charge is shared
            edge, request_id = edges[i % 3], uuid.uuid4().hex
            sent.append(time.monotonic())
            response = await client.post(
                f"{edge.url}/v1/completions",
                json={**_body(200), "seed": 3},
                headers={"authorization": f"Bearer {key}", "x-request-id": request_id},
            )
            done.append(time.monotonic())
            assert response.status_code == 200, response.text
            remaining.append(int(response.headers["x-ratelimit-remaining-tokens"]))
            used.append(response.json()["usage"]["total_tokens"])
            # The correction lands just after the response; the edge logs the request's
            # record once it has.
            await edge.record(request_id)
    # Identical requests reserve the same amount; the next one therefore sees the real usage
    # of the previous one charged (not its 200-token reservation), less what refilled
    # between the two charges: TPM/60 tokens a second over the time measured around them
    # (one more for the rounding of `remaining`).
    for i, usage in enumerate(used[:-1]):
        refilled = math.ceil((done[i + 1] - sent[i] + CLOCK_SKEW_S) * TPM / 60)
        charged = remaining[i] - remaining[i + 1]
        assert usage - refilled - 1 <= charged <= usage, (remaining, used, refilled)
    assert max(used) < 150  # so a reservation-sized charge (over 200) would have been visible
