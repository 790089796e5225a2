"""Budgets in this process's memory: one edge process, no store to reach.

Each call checks and charges without awaiting anything in between, so on the event loop
it is atomic. A budget's counter holds its window's buckets (`period`), their total and
the oldest bucket still holding tokens; buckets that leave the window are dropped as
they do (from the oldest, so each is visited once). State is bounded: a counter whose
window has passed is swept away a few per call, and there are never more than
`max_counters` (the least recently written is forgotten first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from zoneinfo import ZoneInfo

import structlog

from switchyard.edge.budget.base import UTC, Budgets, Part, admits
from switchyard.edge.budget.period import Window
from switchyard.edge.ratelimit.reporting import LogThrottle

_SWEEP_STEP = 2


class _Counter:
    __slots__ = ("buckets", "expires_ms", "oldest", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.total = 0
        self.oldest: int | None = None
        #: When every bucket written has left its window: from then on, the same as absent.
        self.expires_ms = 0

    def tidy(self, window: Window) -> None:
        """Drop the buckets that left the window, and empty ones at the front."""
        oldest = self.oldest
        if oldest is None:
            return
        cutoff = window.bucket - window.span
        if oldest + window.span - 1 <= cutoff:  # every bucket it can hold has left
            self.buckets.clear()
            self.total, self.oldest = 0, None
            return
        i = oldest
        while i <= window.bucket and i < oldest + window.span:
            value = self.buckets.get(i)
            if value is not None:
                if value > 0 and i > cutoff:
                    break
                del self.buckets[i]
                self.total -= value
            i += 1
        self.oldest = i if self.buckets else None

    def add(self, bucket: int, tokens: int) -> None:
        self.buckets[bucket] = self.buckets.get(bucket, 0) + tokens
        self.total += tokens
        if self.oldest is None or bucket < self.oldest:
            self.oldest = bucket


def counter_name(part: Part) -> str:
    """A budget's counter: per key (or tenant) and period, so a period changed in the
    keys file starts afresh instead of reading another period's buckets."""
    s = part.scope
    return f"{s.kind}:{s.tenant}:{s.name}:{s.budget.period}"


class MemoryBudgets(Budgets):
    def __init__(
        self,
        *,
        zone: ZoneInfo = UTC,
        clock: Callable[[], float] = time.time,
        max_counters: int = 100_000,
    ) -> None:
        super().__init__(zone=zone, clock=clock)
        if max_counters < 1:
            raise ValueError("max_counters must be at least 1")
        self._max = max_counters
        self._counters: OrderedDict[str, _Counter] = OrderedDict()
        self._evictions = LogThrottle(10.0)

    def __len__(self) -> int:
        return len(self._counters)

    async def _reserve(
        self, parts: Sequence[Part]
    ) -> tuple[bool, list[tuple[int, int | None]]] | None:
        now_ms = round(self._clock() * 1000)
        self._sweep(now_ms)
        counters = [self._counters.get(counter_name(p)) for p in parts]
        for part, counter in zip(parts, counters, strict=True):
            if counter is not None:
                counter.tidy(part.window)
        allowed = all(
            admits(c.total if c is not None else 0, p.tokens, p.scope.budget.tokens)
            for p, c in zip(parts, counters, strict=True)
        )
        states: list[tuple[int, int | None]] = []
        for part, counter in zip(parts, counters, strict=True):
            if allowed and part.tokens > 0:
                if counter is None:
                    counter = self._insert(counter_name(part), now_ms)
                counter.add(part.window.bucket, part.tokens)
                counter.expires_ms = max(counter.expires_ms, part.window.expires_ms())
                self._counters.move_to_end(counter_name(part))
            if counter is None:
                states.append((0, None))
            else:
                states.append((counter.total, counter.oldest))
        return allowed, states

    async def _settle(self, corrections: Sequence[tuple[Part, Window, int]]) -> None:
        for part, _, delta in corrections:
            counter = self._counters.get(counter_name(part))
            bucket = part.window.bucket
            if counter is None or bucket not in counter.buckets:
                if delta < 0:
                    continue  # nothing left to refund (forgotten, or tidied away)
                counter = counter or self._insert(counter_name(part), round(self._clock() * 1000))
                counter.expires_ms = max(counter.expires_ms, part.window.expires_ms())
            # A refund never takes a bucket below zero.
            change = max(delta, -counter.buckets.get(bucket, 0))
            counter.add(bucket, change)

    async def aclose(self) -> None:
        self._counters.clear()

    def _insert(self, name: str, now_ms: int) -> _Counter:
        counters = self._counters
        if len(counters) >= self._max:
            _, oldest = counters.popitem(last=False)
            if oldest.expires_ms > now_ms and self._evictions.take() is not None:
                structlog.get_logger(__name__).warning(
                    "budget_memory_full",
                    max_counters=self._max,
                    hint="more budgets in use than max_counters: the oldest's spending is forgotten",
                )
        counter = counters[name] = _Counter()
        return counter

    def _sweep(self, now_ms: int) -> None:
        """Drop the expired counters at the front; rotate live ones to the back."""
        counters = self._counters
        for _ in range(_SWEEP_STEP):
            if not counters:
                return
            name = next(iter(counters))
            if counters[name].expires_ms <= now_ms:
                del counters[name]
            else:
                counters.move_to_end(name)
