"""The response cache in this process's memory: bounded by bytes, least recently used out.

Each entry costs its key and its value (plus a fixed allowance for the bookkeeping around
them), and the sum never passes `max_bytes`: a new entry first evicts the least recently
used ones until it fits. An entry also ends at its TTL; an expired one is dropped when it
is next looked up, or when eviction reaches it, so the bound holds either way.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from switchyard.edge.cache import CacheKey, ResponseCache

#: What one entry costs beyond its key and value (the dict slot, the tuple, the objects'
#: headers): counted, so many tiny entries cannot hold far more memory than the bound.
ENTRY_OVERHEAD_BYTES = 200


class MemoryCache(ResponseCache):
    """Entries in an LRU-ordered dict; `clock` (seconds, monotonic) is injected by tests."""

    def __init__(
        self,
        *,
        max_bytes: int,
        max_entry_bytes: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes < 1 or max_entry_bytes < 1 or ttl_s <= 0:
            raise ValueError("max_bytes, max_entry_bytes and ttl_s must be positive")
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self._ttl_s = ttl_s
        self._clock = clock
        # key -> (value, expiry); the first is the least recently used.
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        #: The bytes the entries cost now (at most `max_bytes`).
        self.size = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _cost(key: str, value: bytes) -> int:
        return len(key) + len(value) + ENTRY_OVERHEAD_BYTES

    async def get(self, key: CacheKey) -> bytes | None:
        found = self._entries.get(key.digest)
        if found is None:
            return None
        value, expires = found
        if self._clock() >= expires:
            self._drop(key.digest)
            return None
        self._entries.move_to_end(key.digest)
        return value

    async def put(self, key: CacheKey, value: bytes) -> None:
        cost = self._cost(key.digest, value)
        if len(value) > self.max_entry_bytes or cost > self.max_bytes:
            return
        if key.digest in self._entries:
            self._drop(key.digest)
        while self.size + cost > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
        self._entries[key.digest] = (value, self._clock() + self._ttl_s)
        self.size += cost

    def _drop(self, digest: str) -> None:
        value, _ = self._entries.pop(digest)
        self.size -= self._cost(digest, value)
