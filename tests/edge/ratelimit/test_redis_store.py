"""How the Redis backend keeps its state: keys, expiry, the script cache, replicas. What
a topology changes (keys on one slot, the script on the slot's master, replicas sharing
through it) on each (`@every_topology`); expiry, Redis's own, on one server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from switchyard.edge.ratelimit import Limits, RedisRateLimiter, create_limiter
from switchyard.edge.ratelimit.redis import SCRIPT_SHA
from tests.edge.ratelimit.harness import TIMEOUT_S
from tests.support.polling import eventually
from tests.support.redis_topology import RedisTopology, every_topology

Client = redis.asyncio.Redis | RedisCluster


@pytest.fixture
async def client(redis_topology: RedisTopology) -> AsyncIterator[Client]:
    async with redis_topology.client(decode_responses=True) as client:
        yield client


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex}"


@every_topology
async def test_a_subject_s_keys_share_a_hash_tag_and_expire_at_their_tat(
    redis_topology: RedisTopology, client: Client, prefix: str
) -> None:
    limiter = RedisRateLimiter(redis_topology.url, key_prefix=prefix, timeout_s=TIMEOUT_S)
    try:
        before = await redis_ms(client)
        await limiter.acquire("team:a", Limits(rpm=10, tpm=1000), 250)

        keys = sorted(await every_key(client, f"{prefix}:*"))
        assert keys == [f"{prefix}:{{team:a}}:rpm", f"{prefix}:{{team:a}}:tpm"]
        # Each key lives until its TAT: 6 s for one request, 15 s for 250 tokens, less
        # the time since the charge (whatever the machine made of it).
        requests_ttl = await client.pttl(keys[0])
        tokens_ttl = await client.pttl(keys[1])
        since = await redis_ms(client) - before
        assert 6_000 - since <= requests_ttl <= 6_000
        assert 15_000 - since <= tokens_ttl <= 15_000
    finally:
        await limiter.aclose()


async def test_keys_vanish_once_their_tat_has_passed(
    redis_topology: RedisTopology, client: Client, prefix: str
) -> None:
    limiter = RedisRateLimiter(
        redis_topology.url, key_prefix=prefix, period_s=0.2, timeout_s=TIMEOUT_S
    )
    try:
        limits = Limits(rpm=2, tpm=100)
        await limiter.acquire("key", limits, 50)
        await limiter.settle("key", limits, reserved=50, used=0)  # refunded: nothing left
        assert await client.exists(f"{prefix}:{{key}}:tpm") == 0
        # One request is 0.1 s: its key expires then (-2: already gone; -1 would be never).
        assert await client.pttl(f"{prefix}:{{key}}:rpm") in (-2, *range(1, 101))

        await eventually(lambda: _no_keys(client, prefix), what="every key expired")
    finally:
        await limiter.aclose()


@every_topology
async def test_a_lost_script_cache_is_loaded_again(
    redis_topology: RedisTopology, client: Client, prefix: str
) -> None:
    limiter = RedisRateLimiter(redis_topology.url, key_prefix=prefix, timeout_s=TIMEOUT_S)
    try:
        limits = Limits(rpm=3, tpm=None)
        assert (await limiter.acquire("key", limits, 0)).allowed
        await client.script_flush()

        decision = await limiter.acquire("key", limits, 0)

        assert decision.allowed
        assert decision.remaining_requests == 1  # the state survived; only the script went
        assert await script_exists(client, f"{prefix}:{{key}}:rpm")
    finally:
        await limiter.aclose()


@every_topology
async def test_replicas_share_one_limit(redis_topology: RedisTopology, prefix: str) -> None:
    replicas = [
        create_limiter(
            "redis",
            redis=redis_topology.url,
            failure_mode="closed",
            key_prefix=prefix,
            timeout_s=TIMEOUT_S,
        )
        for _ in range(3)
    ]
    try:
        limits = Limits(rpm=30, tpm=None)
        async with redis_topology.client() as client:
            before = await redis_ms(client)
            decisions = await asyncio.gather(
                *(replica.acquire("key", limits, 0) for replica in replicas for _ in range(20))
            )
            since = await redis_ms(client) - before
        # The whole minute's 30 at once, and one more per 2 s the burst took, no more.
        assert 30 <= sum(d.allowed for d in decisions) <= 30 + since // 2_000
    finally:
        for replica in replicas:
            await replica.aclose()


async def redis_ms(client: Client) -> int:
    """Redis's clock (the limiter's), in ms."""
    seconds, microseconds = await client.time()
    return int(seconds) * 1000 + int(microseconds) // 1000


async def _no_keys(client: Client, prefix: str) -> bool:
    return await every_key(client, f"{prefix}:*") == []


async def every_key(client: Client, pattern: str) -> list[str]:
    """KEYS on the server, or on every master of a cluster."""
    if isinstance(client, RedisCluster):
        found = await client.keys(pattern, target_nodes=RedisCluster.PRIMARIES)
    else:
        found = await client.keys(pattern)
    return [str(k) for k in found]


async def script_exists(client: Client, key: str) -> bool:
    """Whether the server that holds `key` (a cluster's master of its slot) has the
    limiter's script."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)
        reply = await client.execute_command("SCRIPT EXISTS", SCRIPT_SHA, target_nodes=node)
        return bool(reply == [True])
    return bool(await client.script_exists(SCRIPT_SHA) == [True])
