"""The Redis store: its keys and their expiry (on each topology: single, Sentinel,
Cluster), misses and the entry limit (one server), and Redis failing (one server)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio
from prometheus_client import REGISTRY
from redis.asyncio.cluster import RedisCluster

from switchyard.edge.cache import CacheKey
from switchyard.edge.cache.redis import RedisCache
from tests.support.redis import RedisServer, running_redis
from tests.support.redis_topology import RedisTopology, every_topology

TTL_S = 600.0


def errors(operation: str) -> float:
    value = REGISTRY.get_sample_value(
        "switchyard_edge_cache_errors_total", {"operation": operation}
    )
    return value or 0.0


def fresh_key() -> CacheKey:
    return CacheKey(uuid.uuid4().hex * 2)


Client = redis.asyncio.Redis | RedisCluster


@pytest.fixture
async def client(redis_topology: RedisTopology) -> AsyncIterator[Client]:
    async with redis_topology.client() as client:
        yield client


@pytest.fixture
async def cache(redis_topology: RedisTopology) -> AsyncIterator[RedisCache]:
    cache = RedisCache(redis_topology.url, max_entry_bytes=1000, ttl_s=TTL_S, max_connections=4)
    await cache.start()
    yield cache
    await cache.aclose()


@every_topology
async def test_an_entry_is_one_prefixed_hash_tagged_key_that_expires_at_the_ttl(
    cache: RedisCache, client: Client
) -> None:
    key = fresh_key()
    await cache.put(key, b"\x00answer\xff")

    name = f"switchyard:cache:{{{key.digest}}}"
    assert await client.get(name) == b"\x00answer\xff"
    assert await cache.get(key) == b"\x00answer\xff"
    # SET ... PX: the key's own expiry, read back (never a wait).
    assert 0 < await client.pttl(name) <= TTL_S * 1000


async def test_an_absent_entry_is_a_miss(cache: RedisCache) -> None:
    assert await cache.get(fresh_key()) is None


async def test_an_entry_over_the_entry_limit_is_not_written(
    cache: RedisCache, client: Client
) -> None:
    key = fresh_key()
    await cache.put(key, b"x" * 1001)
    assert await client.exists(RedisCache.name(key)) == 0
    await cache.put(key, b"x" * 1000)
    assert await cache.get(key) == b"x" * 1000


async def test_redis_gone_is_a_miss_and_a_skipped_write_counted_never_raised(
    tmp_path: Path,
) -> None:
    with running_redis(tmp_path) as server:
        cache = RedisCache(server.url, max_entry_bytes=1000, ttl_s=TTL_S, max_connections=2)
        await cache.start()
        try:
            key = fresh_key()
            await cache.put(key, b"kept")
            assert await cache.get(key) == b"kept"

            server.stop()  # killed: its data is gone with it (no persistence)
            gets, puts = errors("get"), errors("put")
            assert await cache.get(key) is None
            await cache.put(key, b"lost")
            assert errors("get") == gets + 1
            assert errors("put") == puts + 1

            server.start()  # back, empty: the cache works again without a restart
            assert await cache.get(key) is None
            await cache.put(key, b"again")
            assert await cache.get(key) == b"again"
            assert (errors("get"), errors("put")) == (gets + 1, puts + 1)
        finally:
            await cache.aclose()


async def test_a_frozen_redis_is_a_miss_after_the_command_timeout(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        cache = RedisCache(
            server.url, max_entry_bytes=1000, ttl_s=TTL_S, timeout_s=0.2, max_connections=2
        )
        await cache.start()
        try:
            key = fresh_key()
            await cache.put(key, b"kept")
            server.pause()  # connections stay open, nothing answers
            gets = errors("get")
            assert await cache.get(key) is None
            assert errors("get") == gets + 1
        finally:
            server.resume()
            await cache.aclose()


async def test_an_unreachable_redis_at_start_is_no_reason_not_to_start(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # an address nothing listens on (not started)
    cache = RedisCache(server.url, max_entry_bytes=1000, ttl_s=TTL_S, max_connections=2)
    try:
        await cache.start()
        assert await cache.get(fresh_key()) is None
    finally:
        await cache.aclose()
        server.close()
