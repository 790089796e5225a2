"""How the Redis store keeps its state: one hash per budget, a key's and its tenant's on
one slot (on Cluster too), expiring once the window has passed; and a Redis that is away."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from switchyard.edge.auth.keysfile import Budget
from switchyard.edge.budget import BudgetsUnavailable, RedisBudgets, Scope
from tests.edge.budget.conftest import TIMEOUT_S, WallClock
from tests.support.processes import free_port
from tests.support.redis_topology import RedisTopology, every_topology

Client = redis.asyncio.Redis | RedisCluster
SCOPES = [
    Scope("key", "team:a", "k1", Budget(tokens=1000, period="day")),
    Scope("tenant", "team:a", "team:a", Budget(tokens=5000, period="24h")),
]


@pytest.fixture
async def client(redis_topology: RedisTopology) -> AsyncIterator[Client]:
    async with redis_topology.client(decode_responses=True) as client:
        yield client


@every_topology
async def test_a_key_and_its_tenant_share_a_slot_and_expire_after_their_window(
    redis_topology: RedisTopology, client: Client
) -> None:
    prefix, clock = f"test:{uuid.uuid4().hex}", WallClock("2027-01-01T18:00:00+00:00")
    budgets = RedisBudgets(
        redis_topology.url,
        zone=ZoneInfo("UTC"),
        clock=clock,
        key_prefix=prefix,
        timeout_s=TIMEOUT_S,
        max_connections=4,
    )
    try:
        await budgets.start()
        verdict = await budgets.reserve(SCOPES, 100, 50)
        assert verdict.allowed
        assert [s.spent for s in verdict.standings] == [150, 150]
        names = [f"{prefix}:{{team:a}}:key:k1:day", f"{prefix}:{{team:a}}:tenant:24h"]
        for name in names:
            assert await client.hget(name, "t") == "150"
        # The day's hash lives until midnight (6 h on the injected clock), the 24h one until
        # its current hour leaves the window (24 h); each plus the 5 min grace.
        assert 6 * 3600_000 <= await client.pttl(names[0]) <= 6 * 3600_000 + 300_000
        assert 24 * 3600_000 <= await client.pttl(names[1]) <= 24 * 3600_000 + 300_000
        assert verdict.reservation is not None
        await budgets.settle(verdict.reservation, 10, 0)
        for name in names:
            assert await client.hget(name, "t") == "10"
    finally:
        await budgets.aclose()


@pytest.mark.parametrize("mode", ["closed", "open"])
async def test_a_redis_that_is_away_refuses_or_lets_through(mode: str) -> None:
    budgets = RedisBudgets(
        f"redis://127.0.0.1:{free_port()}/0",
        failure_mode=mode,  # type: ignore[arg-type]
        timeout_s=0.2,
        connect_timeout_s=0.2,
        max_connections=2,
    )
    try:
        if mode == "closed":
            with pytest.raises(BudgetsUnavailable):
                await budgets.reserve(SCOPES, 1, 1)
        else:
            verdict = await budgets.reserve(SCOPES, 1, 1)
            assert verdict.allowed
            assert verdict.reservation is None
            assert not verdict.standings
    finally:
        await budgets.aclose()
