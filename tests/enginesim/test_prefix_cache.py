"""The simulated prefix cache: chained block keys, the last-token rule, LRU eviction."""

from __future__ import annotations

import pytest

from switchyard.enginesim import generation
from switchyard.enginesim.prefix_cache import PrefixCache, block_keys


def test_keys_chain_over_the_whole_prefix() -> None:
    a = block_keys([1, 2, 3, 4, 5, 6, 7], 2)
    assert len(a) == 3  # the trailing partial block has no key
    b = block_keys([1, 2, 3, 4, 9, 9], 2)
    assert a[:2] == b[:2]
    assert a[2] != b[2]
    # The same block after a different prefix is a different key.
    assert block_keys([9, 9, 5, 6], 2)[1] != a[2]
    assert block_keys([], 4) == []
    assert block_keys([1, 2, 3], 4) == []


async def test_hits_stop_at_the_first_missing_block_and_count_tokens() -> None:
    cache = PrefixCache(block_size=4, capacity=100)
    first = await cache.lookup(list(range(20)))
    assert (first.queried, first.hit, first.uncached) == (20, 0, 20)
    second = await cache.lookup([*range(10), 99, *range(11, 20)])
    assert second.hit == 8  # blocks 0-3 and 4-7; 8-11 differs at 10
    assert (cache.queries, cache.hits) == (40, 8)


async def test_a_whole_cached_prompt_leaves_its_last_token_or_block() -> None:
    ids = list(range(32))
    vllm = PrefixCache(block_size=16, capacity=100)
    tgi = PrefixCache(block_size=16, capacity=100, trim_last_token=True)
    for cache in (vllm, tgi):
        await cache.lookup(ids)
    assert (await vllm.lookup(ids)).hit == 16  # the last block is computed again
    assert (await tgi.lookup(ids)).hit == 31  # every block, less one token
    radix = PrefixCache(block_size=1, capacity=100)
    await radix.lookup(ids)
    assert (await radix.lookup(ids)).hit == 31


async def test_capacity_bounds_the_cache_and_evicts_the_least_recently_used() -> None:
    cache = PrefixCache(block_size=1, capacity=10)
    a, b, c = [1] * 6, [2] * 4, [3] * 4
    await cache.lookup(a)
    await cache.lookup(b)
    assert len(cache) == 10
    assert (await cache.lookup(a)).hit == 5  # a is now the most recent
    await cache.lookup(c)  # over capacity: b goes first
    assert len(cache) == 10
    assert (await cache.lookup(b)).hit == 0


async def test_eviction_trims_a_prefix_from_its_end() -> None:
    cache = PrefixCache(block_size=1, capacity=10)
    a, b = [1] * 6, [2] * 6
    await cache.lookup(a)
    await cache.lookup(b)  # two of a's tokens must go: its last two
    assert (await cache.lookup(a)).hit == 4


async def test_a_disabled_cache_counts_nothing_and_prefills_everything() -> None:
    cache = PrefixCache(block_size=1, capacity=10, enabled=False)
    for _ in range(2):
        lookup = await cache.lookup_text("one two three", 3)
        assert (lookup.hit, lookup.uncached) == (0, 3)
    assert (cache.queries, cache.hits, len(cache)) == (0, 0, 0)


async def test_text_prompts_are_keyed_by_the_simulators_tokens() -> None:
    cache = PrefixCache(block_size=2, capacity=100)
    text = "the quick brown fox jumps over the lazy dog"
    n = len(await generation.encode(text))
    await cache.lookup_text(text, n)
    # Image tokens beyond the text count as queried, never as cached.
    again = await cache.lookup_text(text, n + 5)
    assert again.queried == n + 5
    assert again.hit == (n - 1) // 2 * 2


async def test_a_prompt_shorter_than_a_block_is_queried_but_never_kept() -> None:
    cache = PrefixCache(block_size=16, capacity=100)
    for _ in range(2):
        assert (await cache.lookup_text("a short prompt", 3)).hit == 0
    assert (cache.queries, cache.hits, len(cache)) == (6, 0, 0)


async def test_long_prompts_are_cached_too() -> None:
    ids = list(range(generation.LARGE_TEXT + 10))
    cache = PrefixCache(block_size=16, capacity=10_000)
    await cache.lookup(ids)
    assert (await cache.lookup(ids)).hit == (len(ids) - 1) // 16 * 16


def test_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="block_size"):
        PrefixCache(block_size=0, capacity=1)
    with pytest.raises(ValueError, match="capacity"):
        PrefixCache(block_size=1, capacity=-1)
