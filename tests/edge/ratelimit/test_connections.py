"""The Redis limiter's connections: opened before the first request, bounded, and a slow
set-up (or a wait for a free one) is not mistaken for a Redis that is down.

A TCP proxy in front of a real redis-server holds new connections on demand: the client's
connect returns, but nothing reaches Redis until the test lets it (a server slow to
accept, or the edge's event loop too busy to finish a handshake in time).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio
from structlog.testing import capture_logs

from switchyard.edge.ratelimit import Limits, RedisRateLimiter
from switchyard.edge.ratelimit.redis import SCRIPT_SHA
from tests.support.polling import eventually
from tests.support.processes import free_port
from tests.support.redis import RedisServer, running_redis
from tests.support.tcp_proxy import TcpProxy

LIMITS = Limits(rpm=1_000_000, tpm=None)
POOL = 4


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the test's own: its script cache starts empty."""
    with running_redis(tmp_path) as server:
        yield server


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[TcpProxy]:
    async with TcpProxy(redis_server.port) as proxy:
        yield proxy


def _limiter(proxy: TcpProxy, timeout_s: float = 5.0) -> RedisRateLimiter:
    """Generous bounds, but for what a test sets: a loaded machine must not fail it."""
    return RedisRateLimiter(
        f"redis://{proxy.address}/0",
        key_prefix=f"test:{uuid.uuid4().hex}",
        max_connections=POOL,
        timeout_s=timeout_s,
        connect_timeout_s=30.0,
        pool_timeout_s=30.0,
    )


async def test_start_opens_the_whole_pool_and_loads_the_script(
    redis_server: RedisServer, proxy: TcpProxy
) -> None:
    limiter = _limiter(proxy)
    try:
        await limiter.start()
        assert proxy.accepted == POOL
        client = redis.asyncio.Redis.from_url(redis_server.url)
        try:
            assert await client.script_exists(SCRIPT_SHA) == [True]
        finally:
            await client.aclose()

        # A burst far wider than the pool waits for its connections: none is opened.
        proxy.hold_new()
        decisions = await asyncio.gather(*(limiter.acquire("key", LIMITS, 0) for _ in range(200)))
        assert all(d.allowed for d in decisions)
        assert proxy.accepted == POOL
    finally:
        proxy.release()
        await limiter.aclose()


async def test_a_connection_slow_to_set_up_is_waited_for(proxy: TcpProxy) -> None:
    # Replies may take 2 s (ample for a loaded machine); setting up a connection, longer.
    reply_timeout_s = 2.0
    limiter = _limiter(proxy, timeout_s=reply_timeout_s)
    try:
        proxy.hold_new()
        acquiring = asyncio.create_task(limiter.acquire("key", LIMITS, 0))
        await eventually(lambda: proxy.held == 1, what="the connection held")
        # Held past a reply's timeout (counted from when the hold was seen: the limiter has
        # waited at least that long), whatever the machine's speed: a set-up bound by the
        # reply timeout would fail.
        await asyncio.sleep(reply_timeout_s * 1.5)
        assert not acquiring.done()
        proxy.release()
        decision = await acquiring
        assert decision.allowed
        assert decision.remaining_requests is not None  # Redis answered
    finally:
        proxy.release()
        await limiter.aclose()


async def test_a_redis_that_is_not_there_at_start_is_no_reason_not_to_start() -> None:
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0", max_connections=POOL)
    try:
        with capture_logs() as logs:
            await limiter.start()
        [warning] = [entry for entry in logs if entry["event"] == "ratelimit_store_not_warmed"]
        assert warning["opened"] == 0
    finally:
        await limiter.aclose()
