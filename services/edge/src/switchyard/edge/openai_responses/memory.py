"""The Responses store in this process's memory (`EDGE_RESPONSES_STORE=memory`): one edge.

Bounded three ways: each response's size (`responses_max_bytes`: `ResponseTooLarge`),
their number (`responses_max_entries`: the least recently used goes), and their time to
live (`responses_ttl_s`, from when each was kept). Responses are kept as their JSON, so
that what a caller gets back is its own copy and the size bound is the real one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict

import orjson

from switchyard.edge.openai_responses.store import ResponseTooLarge, StoredResponse


def encoded(stored: StoredResponse) -> bytes:
    """A stored response as JSON (its `request` bytes as text: a JSON body is UTF-8)."""
    fields = asdict(stored)
    request = stored.request
    fields["request"] = request.decode() if request is not None else None
    return orjson.dumps(fields)


def decoded(data: bytes) -> StoredResponse:
    fields = orjson.loads(data)
    request = fields.pop("request")
    return StoredResponse(**fields, request=request.encode() if request is not None else None)


class MemoryResponseStore:
    """A `ResponseStore` in memory; `clock` (monotonic seconds) is injectable for tests."""

    def __init__(
        self,
        *,
        max_entries: int,
        ttl_s: float,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._max_bytes = max_bytes
        self._clock = clock
        #: (tenant, id) → (expiry, JSON), least recently used first.
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def start(self) -> None:
        return None

    async def put(self, stored: StoredResponse) -> None:
        data = encoded(stored)
        if len(data) > self._max_bytes:
            raise ResponseTooLarge(
                f"the response with its conversation is {len(data)} bytes, over this "
                f"server's limit of {self._max_bytes} bytes per stored response"
            )
        name = (stored.tenant, stored.id)
        self._entries[name] = (self._clock() + self._ttl_s, data)
        self._entries.move_to_end(name)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        name = (tenant, response_id)
        entry = self._entries.get(name)
        if entry is None:
            return None
        expiry, data = entry
        if self._clock() >= expiry:
            del self._entries[name]
            return None
        self._entries.move_to_end(name)
        return decoded(data)

    async def delete(self, tenant: str, response_id: str) -> bool:
        entry = self._entries.pop((tenant, response_id), None)
        return entry is not None and self._clock() < entry[0]

    async def close(self) -> None:
        self._entries.clear()
