"""Each backend behind one harness, so that one test runs against both."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from switchyard.edge.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter

BACKENDS = ("memory", "redis")
#: Generous: a loaded test machine (xdist) must not turn a slow connect into a failure.
TIMEOUT_S = 2.0


class FakeClock:
    """A monotonic clock (seconds) that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """A backend's limiters, and how time passes for them.

    Memory limiters run on a fake clock, so their answers are exact; Redis uses its own
    clock, so a few ms pass between calls and durations come back a little shorter.
    """

    name: str
    redis_url: str | None
    clock: FakeClock = field(default_factory=FakeClock)
    created: list[RateLimiter] = field(default_factory=list)

    @property
    def slack_s(self) -> float:
        return 0.0 if self.redis_url is None else 0.2

    def limiter(self, period_s: float = 60.0) -> RateLimiter:
        limiter: RateLimiter
        if self.redis_url is None:
            limiter = MemoryRateLimiter(period_s=period_s, clock=self.clock)
        else:
            prefix = f"test:{uuid.uuid4().hex}"
            limiter = RedisRateLimiter(
                self.redis_url, key_prefix=prefix, period_s=period_s, timeout_s=TIMEOUT_S
            )
        self.created.append(limiter)
        return limiter

    async def advance(self, seconds: float) -> None:
        if self.redis_url is None:
            self.clock.now += seconds
        else:
            # Redis's clock is the wall clock: allow it a ms or two of disagreement.
            await asyncio.sleep(seconds + 0.002)

    def near(self, actual: float | None, expected: float) -> bool:
        """`actual` is `expected`, less at most the time the test itself took."""
        return actual is not None and expected - self.slack_s - 1e-9 <= actual <= expected + 1e-9
