"""A simulated engine's prefix (KV) cache: which leading blocks of a prompt it has already.

Engines keep the KV cache of full blocks of prompt tokens and find, for a new prompt, the
longest run of leading blocks they still hold; those tokens need no prefill. As in vLLM
(`v1/core/kv_cache_utils.py:hash_block_tokens`) each block is keyed by a hash chained over
every token up to and including it, so a block matches only with its whole prefix. SGLang's
radix cache is the same with blocks of one token (`--page-size 1`). At most
`capacity` blocks are kept; the least recently used go first.

Token ids are hashed as tuples of ints, whose hash Python does not salt: the same prompt
gives the same keys in every process. Hashing is CPU work proportional to the prompt, so
`block_keys` runs off the event loop for long prompts; the lookup and insert that follow
are dictionary operations on the loop, so concurrent requests see one consistent cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from switchyard.enginesim import generation

_ROOT: Final = 0  # the parent key of the first block


@dataclass(frozen=True, slots=True)
class Lookup:
    """One request's query: its prompt tokens and how many of them were cached."""

    queried: int
    hit: int
    stored: int = 0  # its tokens the cache holds once it is prefilled (whole blocks)

    @property
    def uncached(self) -> int:
        return self.queried - self.hit

    @property
    def created(self) -> int:
        """Tokens it added to the cache (vLLM's `num_cache_creation_tokens`)."""
        return max(0, self.stored - self.hit)


def block_keys(ids: Sequence[int], block_size: int) -> list[int]:
    """The chained key of each full block of `ids` (a trailing partial block has none)."""
    keys: list[int] = []
    parent = _ROOT
    for start in range(0, len(ids) - block_size + 1, block_size):
        parent = hash((parent, tuple(ids[start : start + block_size])))
        keys.append(parent)
    return keys


@dataclass(slots=True)
class PrefixCache:
    """Full blocks of prompt tokens, least recently used evicted past `capacity` blocks.

    `queries` and `hits` count tokens since start, as the engines' counters do. A disabled
    cache never hits, stores nothing and counts nothing (engines skip the lookup); its
    lookups still say how many tokens to prefill: all of them.
    """

    block_size: int
    capacity: int  # blocks
    enabled: bool = True
    #: A prompt cached whole still prefills its last token: vLLM and SGLang cap the hit
    #: at `len - 1` tokens rounded down to a block; TGI (`trim_last_token`) hits every
    #: cached block but takes one token off (`backends/v3/src/queue.rs`).
    trim_last_token: bool = False
    queries: int = 0
    hits: int = 0
    _blocks: OrderedDict[int, None] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {self.block_size}")
        if self.capacity < 0:
            raise ValueError(f"capacity must be at least 0, got {self.capacity}")

    def __len__(self) -> int:
        """Blocks held."""
        return len(self._blocks)

    async def lookup_text(self, text: str, prompt_tokens: int) -> Lookup:
        """`lookup` for a prompt given as text, tokenized by the simulator's tokenizer.

        `prompt_tokens` may exceed the text's tokens (a multimodal prompt's image tokens,
        which are not cached here): they count as queried and uncached.
        """
        if not self.enabled:
            return Lookup(prompt_tokens, 0)
        if prompt_tokens < self.block_size:  # not one full block: nothing to find or keep
            return self._record(prompt_tokens, 0)
        ids = await generation.encode(text)
        return await self.lookup(ids, prompt_tokens)

    async def lookup(self, ids: Sequence[int], prompt_tokens: int | None = None) -> Lookup:
        """Find the cached prefix of `ids`, then cache its full blocks; count both.

        At most `len(ids) - 1` tokens hit: the engine computes the last prompt token
        again for its logits (vLLM's `max_cache_hit_length`, SGLang's `max_prefix_len`;
        see `trim_last_token` for TGI's rule).
        """
        total = len(ids) if prompt_tokens is None else max(prompt_tokens, len(ids))
        if not self.enabled:
            return Lookup(total, 0)
        heavy = len(ids) > generation.LARGE_TEXT
        keys = await generation.off_loop(heavy, block_keys, ids, self.block_size)
        hit = self._match_and_store(keys, len(ids))
        return self._record(total, hit, len(keys) * self.block_size)

    def _match_and_store(self, keys: Sequence[int], n_ids: int) -> int:
        """Tokens of the longest cached prefix; then every full block is held, the
        prompt's tail least recently used, so eviction trims prefixes from their ends (as
        vLLM frees a request's blocks in reverse)."""
        usable = keys if self.trim_last_token else keys[: max(0, n_ids - 1) // self.block_size]
        matched = 0
        for key in usable:
            if key not in self._blocks:
                break
            matched += 1
        for key in reversed(keys):
            self._blocks[key] = None
            self._blocks.move_to_end(key)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)
        return min(matched * self.block_size, max(0, n_ids - 1))

    def _record(self, queried: int, hit: int, stored: int = 0) -> Lookup:
        self.queries += queried
        self.hits += hit
        return Lookup(queried, hit, stored)
