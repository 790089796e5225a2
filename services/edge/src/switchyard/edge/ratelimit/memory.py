"""The in-process limiter: one edge process, no store to reach.

Each call checks and charges without awaiting anything in between, so on the event loop
it is atomic. State is bounded twice: a key whose TATs have passed carries no
information and is swept away a few entries per call (a clock sweep over an ordered
map, O(1) per call, no stop-the-world pruning), and the map never holds more than
`max_subjects` keys (the oldest is forgotten first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import structlog

from switchyard.edge.ratelimit import gcra
from switchyard.edge.ratelimit.base import UNLIMITED, Decision, Limits, RateLimiter
from switchyard.edge.ratelimit.reporting import LogThrottle

#: Entries inspected by the sweep on each call: more than one, so that sweeping outpaces
#: the creation of new entries (at most one per call).
_SWEEP_STEP = 2


class _Entry:
    """One subject's levels (see `gcra`), each with the ms it was written at."""

    __slots__ = ("expires", "req_at", "req_level", "tok_at", "tok_level")

    def __init__(self) -> None:
        self.req_level = self.req_at = self.tok_level = self.tok_at = 0
        #: When every TAT written so far has passed (ms): from then on, the same as absent.
        self.expires = 0


class MemoryRateLimiter(RateLimiter):
    def __init__(
        self,
        *,
        period_s: float = 60.0,
        max_subjects: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` is in seconds (monotonic); tests inject their own."""
        if max_subjects < 1:
            raise ValueError("max_subjects must be at least 1")
        self._period = gcra.period_ms(period_s)
        self._max_subjects = max_subjects
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._evictions = LogThrottle(10.0, clock)

    def __len__(self) -> int:
        """Subjects held now (expired ones included until the sweep reaches them)."""
        return len(self._entries)

    async def acquire(self, subject: str, limits: Limits, tokens: int) -> Decision:
        if tokens < 0:
            raise ValueError("tokens must be >= 0")
        rpm, tpm = limits.rpm, limits.tpm
        if rpm is None and tpm is None:
            return UNLIMITED
        now = self._now()
        self._sweep(now)
        period = self._period
        entry = self._entries.get(subject)
        requests = token_level = 0
        allowed = True
        if rpm is not None:
            if entry is not None:
                requests = gcra.drain(entry.req_level, entry.req_at, now, rpm)
            allowed = gcra.admits(requests, 1, period, rpm)
        if tpm is not None:
            if entry is not None:
                token_level = gcra.drain(entry.tok_level, entry.tok_at, now, tpm)
            allowed = gcra.admits(token_level, tokens, period, tpm) and allowed
        if allowed and (rpm is not None or tokens):
            if entry is None:
                entry = self._insert(subject, now)
            if rpm is not None:
                requests += period
                entry.req_level, entry.req_at = requests, now
                entry.expires = max(entry.expires, now - (-requests // rpm))
            if tpm is not None and tokens:
                token_level += tokens * period
                entry.tok_level, entry.tok_at = token_level, now
                entry.expires = max(entry.expires, now - (-token_level // tpm))
        return gcra.decide(limits, tokens, period, allowed, requests, token_level)

    async def settle(self, subject: str, limits: Limits, reserved: int, used: int) -> None:
        tpm = limits.tpm
        delta = used - reserved
        if tpm is None or delta == 0:
            return
        now = self._now()
        period = self._period
        entry = self._entries.get(subject)
        if entry is None:
            if delta < 0:
                return  # nothing outstanding to refund: the TAT never goes before now
            entry = self._insert(subject, now)
            level = 0
        else:
            level = gcra.drain(entry.tok_level, entry.tok_at, now, tpm)
        level = min(max(level + delta * period, 0), gcra.debt_cap(period, tpm))
        entry.tok_level, entry.tok_at = level, now
        # A refund only ever shortens the true lifetime; keeping the longer one is safe.
        entry.expires = max(entry.expires, now - (-level // tpm))

    async def aclose(self) -> None:
        self._entries.clear()

    def _now(self) -> int:
        return round(self._clock() * 1000)

    def _insert(self, subject: str, now: int) -> _Entry:
        entries = self._entries
        if len(entries) >= self._max_subjects:
            _, oldest = entries.popitem(last=False)
            if oldest.expires > now:
                self._forgot_live_subject()
        entry = entries[subject] = _Entry()
        return entry

    def _sweep(self, now: int) -> None:
        """Drop the expired entries at the front; rotate live ones to the back."""
        entries = self._entries
        for _ in range(_SWEEP_STEP):
            if not entries:
                return
            subject = next(iter(entries))
            if entries[subject].expires <= now:
                del entries[subject]
            else:
                entries.move_to_end(subject)

    def _forgot_live_subject(self) -> None:
        suppressed = self._evictions.take()
        if suppressed is not None:
            structlog.get_logger(__name__).warning(
                "ratelimit_memory_full",
                max_subjects=self._max_subjects,
                evicted_live_since_last=suppressed + 1,
                hint="more active keys than max_subjects: their usage is forgotten",
            )
