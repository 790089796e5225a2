"""A burst on a freshly started edge, with Redis healthy: no request refused.

Before, the edge opened its Redis connections on demand, so the first burst opened dozens
at once, each bound by the 0.25 s command timeout, and the slow ones failed closed: 503
with Redis up (150 requests: 9 refused). Now the edge opens its whole pool and loads its
script before it is ready, and a burst waits for pooled connections. To make "slow to set
up" certain rather than likely, a proxy in front of Redis holds every connection opened
after start-up: a burst that needs a new connection cannot get one.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.edge import Edge, KeySpec, start_edge
from tests.support.redis import running_redis
from tests.support.stacks import start_stack
from tests.support.tcp_proxy import TcpProxy

POOL = 4
BURST = 150
KEYS = (KeySpec("limited", rpm=1_000_000, tpm=1_000_000_000),)
BODY = {"model": "demo-vllm", "prompt": "go", "max_tokens": 2}


@pytest.fixture
async def edge_and_proxy(tmp_path: Path) -> AsyncIterator[tuple[Edge, TcpProxy]]:
    with running_redis(tmp_path) as redis:
        engine = await asyncio.to_thread(start_stack, "vllm", tmp_path)
        try:
            async with TcpProxy(redis.port) as proxy:
                env = {
                    "EDGE_REDIS_MAX_CONNECTIONS": str(POOL),
                    # Generous, so that only the set-up held by the proxy can fail a request.
                    "EDGE_REDIS_TIMEOUT_S": "5",
                    "EDGE_REDIS_CONNECT_TIMEOUT_S": "30",
                    "EDGE_REDIS_POOL_TIMEOUT_S": "30",
                }
                edge = await asyncio.to_thread(
                    start_edge,
                    tmp_path,
                    {"vllm": [engine.address]},
                    keys=KEYS,
                    env=env,
                    redis_url=f"redis://{proxy.address}/0",
                )
                try:
                    yield edge, proxy
                finally:
                    proxy.release()
                    await asyncio.to_thread(edge.stop)
        finally:
            await asyncio.to_thread(engine.stop)


async def test_a_burst_on_a_fresh_edge_is_not_refused_while_redis_is_healthy(
    edge_and_proxy: tuple[Edge, TcpProxy],
) -> None:
    edge, proxy = edge_and_proxy
    assert proxy.accepted == POOL  # opened at start-up, before the edge was ready
    proxy.hold_new()
    limits = httpx.Limits(max_connections=BURST)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        responses = await asyncio.gather(
            *(
                client.post(f"{edge.url}/v1/completions", json=BODY, headers=edge.auth("limited"))
                for _ in range(BURST)
            )
        )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: BURST}, statuses
    assert proxy.accepted == POOL  # the burst waited for pooled connections
    assert all(r.headers.get("x-ratelimit-remaining-requests") for r in responses)
