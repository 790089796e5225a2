"""`max_tokens` held to, where TGI runs past it.

TGI generates in chunks of at most 1024 tokens and re-queues a request while it has
generated fewer than `max_new_tokens` (`router/src/infer/mod.rs`), but each chunk asks
for `min(max_new_tokens, 1024)` more tokens, not for what is left. Above 1024, unless
`max_new_tokens` is a multiple of 1024, the output can therefore run on to the next
multiple of 1024 (1500 asked, 2048 generated). The adapter relays and counts only the
first `max_tokens` tokens; the engine's surplus is dropped.
"""

from __future__ import annotations

from typing import Final

#: TGI's `DEFAULT_GENERATION_LENGTH`: the most tokens one chunk generates.
CHUNK: Final = 1024


def may_overrun(max_tokens: int | None) -> bool:
    """Whether TGI may generate more than `max_tokens` tokens."""
    return max_tokens is not None and max_tokens > CHUNK and max_tokens % CHUNK != 0


class Budget:
    """Counts a streamed output's tokens against `max_tokens` (None: no limit)."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0

    @property
    def spent(self) -> bool:
        """Whether every token `max_tokens` allows has been seen: the rest is surplus."""
        return self.limit is not None and self.used >= self.limit

    def take(self) -> bool:
        """Count one token; whether it is the last one allowed."""
        self.used += 1
        return self.limit is not None and self.used == self.limit

    def cap(self, count: int) -> int:
        """`count` (a token count TGI reports) as it stands within `max_tokens`."""
        return count if self.limit is None else min(count, self.limit)
