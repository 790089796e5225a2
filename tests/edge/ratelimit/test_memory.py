"""The in-memory backend: exact on an injected clock, and bounded in memory."""

from __future__ import annotations

import structlog

from switchyard.edge.ratelimit import Limits, MemoryRateLimiter, create_limiter
from tests.edge.ratelimit.harness import FakeClock


async def test_retry_after_is_exact_on_an_injected_clock() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    limits = Limits(rpm=7, tpm=None)
    for _ in range(7):
        assert (await limiter.acquire("key", limits, 0)).allowed

    refused = await limiter.acquire("key", limits, 0)
    assert refused.retry_after_s == 8.572  # 60/7 s, rounded up to the ms

    clock.now += 8.571
    assert not (await limiter.acquire("key", limits, 0)).allowed
    clock.now += 0.001
    assert (await limiter.acquire("key", limits, 0)).allowed


async def test_expired_subjects_are_swept_away() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    limits = Limits(rpm=10, tpm=100)
    for n in range(1_000):
        assert (await limiter.acquire(f"key-{n}", limits, 10)).allowed
    assert len(limiter) == 1_000

    clock.now += 6.0  # every TAT is now + 6 s
    for _ in range(600):
        await limiter.acquire("busy", Limits(rpm=None, tpm=10**6), 1)

    assert len(limiter) == 1  # only "busy" is left


async def test_a_subject_in_debt_is_kept_until_its_debt_is_paid() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    limits = Limits(rpm=None, tpm=100)
    assert (await limiter.acquire("debtor", limits, 10)).allowed
    await limiter.settle("debtor", limits, reserved=10, used=1_000)  # 10 minutes of debt

    clock.now += 300.0
    for n in range(100):  # each call sweeps the front of the map
        await limiter.acquire(f"other-{n}", limits, 1)

    refused = await limiter.acquire("debtor", limits, 1)
    assert not refused.allowed
    assert refused.reset_tokens_s == 300.0


async def test_many_subjects_never_exceed_the_bound() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock, max_subjects=100)
    limits = Limits(rpm=1, tpm=None)

    with structlog.testing.capture_logs() as logs:
        for n in range(10_000):
            await limiter.acquire(f"key-{n}", limits, 0)
            assert len(limiter) <= 100

    # The newest subjects are still limited; forgetting live ones is reported, rarely.
    assert not (await limiter.acquire("key-9999", limits, 0)).allowed
    full = [log for log in logs if log["event"] == "ratelimit_memory_full"]
    assert len(full) == 1
    assert full[0]["log_level"] == "warning"


async def test_create_limiter_builds_a_memory_limiter() -> None:
    limiter = create_limiter("memory", redis=None, failure_mode="closed")
    assert isinstance(limiter, MemoryRateLimiter)
    await limiter.aclose()
