"""The in-process store: a byte bound it never passes, least recently used out, the TTL."""

from __future__ import annotations

import pytest

from switchyard.edge.cache import CacheKey
from switchyard.edge.cache.memory import ENTRY_OVERHEAD_BYTES, MemoryCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key(n: int) -> CacheKey:
    return CacheKey(f"{n:064x}")


def cost(value: bytes) -> int:
    return 64 + len(value) + ENTRY_OVERHEAD_BYTES


async def test_a_flood_of_distinct_entries_never_passes_the_byte_bound() -> None:
    cache = MemoryCache(max_bytes=50_000, max_entry_bytes=4096, ttl_s=60)
    for n in range(5_000):
        await cache.put(key(n), bytes([n % 256]) * (n % 3000 + 1))
        assert cache.size <= cache.max_bytes
    assert len(cache) > 10  # it kept the bound by evicting, not by refusing everything
    # The newest entry is there; the first ones were evicted long ago.
    assert await cache.get(key(4_999)) == bytes([4_999 % 256]) * (4_999 % 3000 + 1)
    assert await cache.get(key(0)) is None
    # `size` is the real sum of what is kept.
    assert cache.size == sum(cost(v) for v, _ in cache._entries.values())


async def test_the_least_recently_used_entry_goes_first() -> None:
    value = b"x" * 100
    cache = MemoryCache(max_bytes=3 * cost(value), max_entry_bytes=1000, ttl_s=60)
    for n in range(3):
        await cache.put(key(n), value)
    assert await cache.get(key(0)) == value  # 0 is now the most recently used

    await cache.put(key(3), value)  # one must go: 1, the least recently used

    assert await cache.get(key(1)) is None
    assert [await cache.get(key(n)) for n in (0, 2, 3)] == [value] * 3


async def test_an_entry_ends_at_its_ttl() -> None:
    clock = Clock()
    cache = MemoryCache(max_bytes=10_000, max_entry_bytes=1000, ttl_s=30, clock=clock)
    await cache.put(key(1), b"answer")
    clock.now += 29.9
    assert await cache.get(key(1)) == b"answer"
    clock.now += 0.1
    assert await cache.get(key(1)) is None
    assert cache.size == 0
    assert len(cache) == 0


async def test_an_entry_over_the_entry_limit_is_not_kept() -> None:
    cache = MemoryCache(max_bytes=100_000, max_entry_bytes=1000, ttl_s=60)
    await cache.put(key(1), b"x" * 1001)
    await cache.put(key(2), b"x" * 1000)
    assert await cache.get(key(1)) is None
    assert await cache.get(key(2)) == b"x" * 1000


async def test_writing_a_key_again_replaces_its_entry_and_its_cost() -> None:
    cache = MemoryCache(max_bytes=100_000, max_entry_bytes=1000, ttl_s=60)
    await cache.put(key(1), b"x" * 500)
    await cache.put(key(1), b"y" * 10)
    assert await cache.get(key(1)) == b"y" * 10
    assert cache.size == cost(b"y" * 10)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        MemoryCache(max_bytes=0, max_entry_bytes=1, ttl_s=1)
