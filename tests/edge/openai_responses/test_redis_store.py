"""The Redis Responses store: kept per tenant, for its time to live, within its size
limit. Its commands (the write's transaction, a read, a delete, the key's expiry) on each
topology (`@every_topology`); tenants and the limit, the same whatever the topology, on
one server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from switchyard.edge.openai_responses.redis_store import RedisResponseStore, response_key
from switchyard.edge.openai_responses.store import ResponseTooLarge, StoredResponse
from switchyard.edge.redis_pool import RedisConnections
from tests.support.redis_topology import RedisTopology, every_topology

TTL_S = 120.0
MAX_BYTES = 4096


@pytest.fixture
async def store(redis_topology: RedisTopology) -> AsyncIterator[RedisResponseStore]:
    connections = RedisConnections(
        redis_topology.url,
        max_connections=4,
        timeout_s=2.0,
        connect_timeout_s=2.0,
        pool_timeout_s=5.0,
    )
    kept = RedisResponseStore(connections, ttl_s=TTL_S, max_bytes=MAX_BYTES)
    await kept.start()
    try:
        yield kept
    finally:
        await kept.close()


def response(tenant: str = "acme", **extra: object) -> StoredResponse:
    response_id = f"resp_{uuid.uuid4().hex}"
    body = {"id": response_id, "object": "response", "status": "completed", "output": []}
    return StoredResponse(
        response_id,
        tenant,
        "full",
        {**body, **extra},
        input_items=[{"id": "msg_1", "type": "message", "role": "user", "content": "hé"}],
        context=[{"type": "message", "role": "user", "content": "hé"}],
    )


@every_topology
async def test_a_response_is_kept_whole_and_read_back(store: RedisResponseStore) -> None:
    stored = response(metadata={"k": "v"}, usage={"input_tokens": 3})
    stored.request = b'{"model": "m", "input": "hi"}'
    await store.put(stored)
    assert await store.get("acme", stored.id) == stored


async def test_another_tenant_does_not_find_it(store: RedisResponseStore) -> None:
    stored = response()
    await store.put(stored)
    assert await store.get("globex", stored.id) is None
    assert await store.delete("globex", stored.id) is False
    assert await store.get("acme", stored.id) == stored


@every_topology
async def test_deleted_is_gone(store: RedisResponseStore) -> None:
    stored = response()
    await store.put(stored)
    assert await store.delete("acme", stored.id) is True
    assert await store.get("acme", stored.id) is None
    assert await store.delete("acme", stored.id) is False


@every_topology
async def test_it_expires_after_its_time_to_live(
    store: RedisResponseStore, redis_topology: RedisTopology
) -> None:
    stored = response()
    await store.put(stored)
    async with redis_topology.client() as client:
        ttl_ms = await client.pttl(response_key("acme", stored.id))
    assert 0 < ttl_ms <= TTL_S * 1000


async def test_a_response_over_the_limit_is_refused_and_nothing_kept(
    store: RedisResponseStore,
) -> None:
    stored = response(output=[{"type": "message", "text": "x" * MAX_BYTES}])
    with pytest.raises(ResponseTooLarge, match=str(MAX_BYTES)):
        await store.put(stored)
    assert await store.get("acme", stored.id) is None


async def test_putting_again_replaces(store: RedisResponseStore) -> None:
    stored = response()
    await store.put(stored)
    stored.response["status"] = "incomplete"
    await store.put(stored)
    found = await store.get("acme", stored.id)
    assert found is not None
    assert found.response["status"] == "incomplete"
