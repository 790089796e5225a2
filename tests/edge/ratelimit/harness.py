"""Each backend behind one harness, so that one test runs against both."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass, field

import pytest

from switchyard.edge.ratelimit import Decision, MemoryRateLimiter, RateLimiter, RedisRateLimiter

#: Memory, and Redis on one server: every case runs on both.
BACKENDS = ("memory", "redis-single")
#: And Redis in each topology (`tests.support.redis_topology`), under `@every_backend`:
#: only the cases that differ by topology, one per family (the script runs the same on
#: whichever server holds the subject's slot).
EVERY_BACKEND = (*BACKENDS, "redis-sentinel", "redis-cluster")
every_backend = pytest.mark.parametrize("backend", EVERY_BACKEND, indirect=True)
#: Generous: a loaded test machine (xdist) must not turn a slow connect into a failure.
TIMEOUT_S = 2.0


class FakeClock:
    """A monotonic clock (seconds) that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


#: Redis's clock and this process's may disagree by a ms or two; times come rounded up to ms.
CLOCK_SKEW_S = 0.002


@dataclass
class Backend:
    """A backend's limiters, and how time passes for them.

    Memory limiters run on a fake clock, so their answers are exact. Redis uses its own
    clock, which runs on while the test works, and a loaded machine may pause a test at
    any point: so each answer is checked against what the time the test really took
    allows (`near`, `count`, `refused`), never against a guess of how fast it runs.
    """

    name: str
    redis_url: str | None
    clock: FakeClock = field(default_factory=FakeClock)
    created: list[RateLimiter] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    #: Time the test let pass on purpose (`advance`): its expectations include it.
    advanced_s: float = 0.0

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
            await asyncio.sleep(seconds + CLOCK_SKEW_S)
        self.advanced_s += seconds

    def drift_s(self) -> float:
        """How much longer than planned the limiter's clock may have run so far: nothing
        on the fake clock; on Redis's, all the time the test took beyond `advance`."""
        if self.redis_url is None:
            return 0.0
        return time.monotonic() - self.started - self.advanced_s + CLOCK_SKEW_S

    def refilled(self, interval_s: float) -> int:
        """How many units (one every `interval_s`) may have come back unplanned."""
        return math.floor(self.drift_s() / interval_s)

    def near(self, actual: float | None, expected: float) -> bool:
        """A duration (reset, retry-after): `expected`, less at most the drift."""
        return actual is not None and expected - self.drift_s() - 1e-9 <= actual <= expected + 1e-9

    def count(self, actual: int | None, expected: int, interval_s: float) -> bool:
        """A remaining count: `expected`, more by what may have refilled meanwhile."""
        return actual is not None and expected <= actual <= expected + self.refilled(interval_s)

    def refused(self, decision: Decision, needs_s: float) -> bool:
        """Refused, as it must be unless `needs_s` of refill may have passed."""
        return not decision.allowed or self.drift_s() >= needs_s
