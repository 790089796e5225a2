"""The Responses store in Redis: shared by every edge replica, kept for a time to live.

One hash per response, `sy:resp:{<id>}:<tenant>`: another tenant's key names another
hash, so its id is simply not found. The id in braces is the key's hash tag: the response,
its background job's state (fields of the same hash, see `redis_jobs`) and its event log
(`sy:ev:{<id>}`) live in one Cluster slot, so the scripts that touch them together run
on Redis Cluster as on one Redis.

Fields: `doc` (the response, its items and context, as compact JSON), `request` (a
background response's create body, until it has run), and, for background responses,
`status` (the truth while the job runs: it overrides the status in `doc`), `job`,
`attempt`, `cancel`, `owner`, `completions`.
"""

from __future__ import annotations

from typing import Any

import orjson

from switchyard.edge.openai_responses.store import ResponseTooLarge, StoredResponse
from switchyard.edge.redis_pool import RedisConnections


def response_key(tenant: str, response_id: str) -> str:
    return f"sy:resp:{{{response_id}}}:{tenant}"


def events_key(response_id: str) -> str:
    return f"sy:ev:{{{response_id}}}"


def encode(stored: StoredResponse, max_bytes: int) -> bytes:
    """The stored document (all but the request); `ResponseTooLarge` over `max_bytes`."""
    doc = orjson.dumps(
        {
            "key_name": stored.key_name,
            "response": stored.response,
            "input_items": stored.input_items,
            "context": stored.context,
        }
    )
    if len(doc) > max_bytes:
        raise ResponseTooLarge(
            f"the response with its conversation is {len(doc)} bytes, over the "
            f"store's limit of {max_bytes}"
        )
    return doc


def decode(
    tenant: str,
    response_id: str,
    doc: bytes | str,
    request: bytes | str | None,
    status: bytes | str | None,
) -> StoredResponse:
    fields: dict[str, Any] = orjson.loads(doc)
    response: dict[str, Any] = fields["response"]
    if status is not None:
        response["status"] = status.decode() if isinstance(status, bytes) else status
    return StoredResponse(
        id=response_id,
        tenant=tenant,
        key_name=fields["key_name"],
        response=response,
        input_items=fields["input_items"],
        context=fields["context"],
        request=request.encode() if isinstance(request, str) else request,
    )


class RedisResponseStore:
    def __init__(self, connections: RedisConnections, *, ttl_s: float, max_bytes: int) -> None:
        self._connections = connections
        self._redis = connections.client
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._max_bytes = max_bytes

    @property
    def connections(self) -> RedisConnections:
        return self._connections

    @property
    def ttl_ms(self) -> int:
        return self._ttl_ms

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    async def start(self) -> None:
        # A Redis not there yet is no reason not to start: each request retries it.
        await self._connections.warm()

    async def put(self, stored: StoredResponse) -> None:
        doc = encode(stored, self._max_bytes)
        key = response_key(stored.tenant, stored.id)
        mapping: dict[str, bytes] = {"doc": doc}
        if stored.request is not None:
            mapping["request"] = stored.request
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
            pipe.pexpire(key, self._ttl_ms)
            await pipe.execute()

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        doc, request, status = await self._redis.hmget(
            response_key(tenant, response_id), ["doc", "request", "status"]
        )
        if doc is None:
            return None
        return decode(tenant, response_id, doc, request, status)

    async def delete(self, tenant: str, response_id: str) -> bool:
        deleted = await self._redis.delete(response_key(tenant, response_id))
        if deleted:
            await self._redis.delete(events_key(response_id))
        return bool(deleted)

    async def close(self) -> None:
        await self._connections.close()
