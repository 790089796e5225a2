"""What every backend must do, in memory and in Redis alike (one server; the cases marked
`@every_backend` also through Sentinel and Cluster: acquire, settle, subjects' keys)."""

from __future__ import annotations

import asyncio

import pytest

from switchyard.edge.ratelimit import MAX_LIMIT, Limits
from tests.edge.ratelimit.harness import Backend, every_backend


async def test_a_burst_admits_exactly_the_rpm(backend: Backend) -> None:
    limiter = backend.limiter()
    limits = Limits(rpm=10, tpm=None)

    decisions = [await limiter.acquire("key", limits, 0) for _ in range(11)]

    assert [d.allowed for d in decisions[:10]] == [True] * 10
    refused = decisions[-1]
    assert backend.refused(refused, 6.0)  # one request is 60/10 s
    remaining = [d.remaining_requests for d in decisions]
    assert all(
        backend.count(actual, expected, 6.0)
        for actual, expected in zip(remaining, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0], strict=True)
    ), remaining
    assert backend.near(refused.retry_after_s, 60 / 10)
    assert refused.limit_requests == 10
    assert not refused.too_large
    assert (refused.limit_tokens, refused.remaining_tokens, refused.reset_tokens_s) == (
        None,
        None,
        None,
    )
    assert all(d.retry_after_s == 0 for d in decisions[:10])


@every_backend
async def test_a_concurrent_burst_admits_exactly_the_rpm(backend: Backend) -> None:
    limiter = backend.limiter()
    limits = Limits(rpm=25, tpm=None)

    decisions = await asyncio.gather(*(limiter.acquire("key", limits, 0) for _ in range(80)))

    interval = 60 / 25
    assert backend.count(sum(d.allowed for d in decisions), 25, interval)
    # Atomic: each admission saw the state the one before left (unless a request came
    # back in between, which repeats a count).
    remaining = sorted(d.remaining_requests or 0 for d in decisions if d.allowed)
    assert backend.refilled(interval) > 0 or remaining == list(range(25))


async def test_token_costs_fill_the_tpm(backend: Backend) -> None:
    limiter = backend.limiter()
    limits = Limits(rpm=None, tpm=100)

    admitted = [await limiter.acquire("key", limits, 30) for _ in range(3)]
    refused = await limiter.acquire("key", limits, 30)
    last = await limiter.acquire("key", limits, 10)

    token = 60 / 100  # seconds: one comes back
    assert all(
        backend.count(d.remaining_tokens, expected, token)
        for d, expected in zip(admitted, [70, 40, 10], strict=True)
    )
    # 90 used + 30 asked - 100 allowed = 20 tokens over.
    assert backend.refused(refused, 20 * token)
    assert backend.count(refused.remaining_tokens, 10, token)
    assert backend.near(refused.retry_after_s, 20 * token)
    assert last.allowed
    assert backend.count(last.remaining_tokens, 0, token)
    assert backend.near(last.reset_tokens_s, 60.0)
    assert last.limit_requests is None
    assert last.remaining_requests is None


async def test_a_token_refusal_charges_no_request(backend: Backend) -> None:
    limiter = backend.limiter()
    limits = Limits(rpm=2, tpm=100)

    first = await limiter.acquire("key", limits, 60)
    refused = await limiter.acquire("key", limits, 60)
    second = await limiter.acquire("key", limits, 40)

    assert first.allowed
    assert backend.refused(refused, 20 * 60 / 100)
    assert backend.count(refused.remaining_requests, 1, 30.0)
    assert backend.near(refused.retry_after_s, 20 * 60 / 100)
    # Two requests fit, so the refused one was not counted.
    assert second.allowed
    assert backend.count(second.remaining_requests, 0, 30.0)
    assert backend.count(second.remaining_tokens, 0, 0.6)


async def test_a_request_refusal_charges_no_tokens(backend: Backend) -> None:
    limiter = backend.limiter()
    limits = Limits(rpm=1, tpm=100)

    first = await limiter.acquire("key", limits, 10)
    refused = await limiter.acquire("key", limits, 50)
    # The same key's token bucket alone: 10 + 90 fits only if the 50 was not charged.
    tokens_only = await limiter.acquire("key", Limits(rpm=None, tpm=100), 90)

    assert first.allowed
    assert backend.refused(refused, 60.0)
    assert backend.count(refused.remaining_tokens, 90, 0.6)
    assert backend.near(refused.retry_after_s, 60.0)
    assert tokens_only.allowed
    assert backend.count(tokens_only.remaining_tokens, 0, 0.6)


async def test_a_request_larger_than_the_tpm_is_never_admissible(backend: Backend) -> None:
    limiter = backend.limiter()
    limits = Limits(rpm=5, tpm=100)

    too_large = await limiter.acquire("key", limits, 101)
    fits = await limiter.acquire("key", limits, 100)

    assert not too_large.allowed
    assert too_large.too_large
    assert too_large.retry_after_s == 0
    assert (too_large.remaining_requests, too_large.remaining_tokens) == (5, 100)
    # Nothing was charged for it.
    assert fits.allowed
    assert not fits.too_large
    assert (fits.remaining_requests, fits.remaining_tokens) == (4, 0)


async def test_remaining_and_reset_describe_the_state_after_the_charge(backend: Backend) -> None:
    limiter = backend.limiter()

    decision = await limiter.acquire("key", Limits(rpm=10, tpm=1000), 250)

    assert decision.allowed
    assert decision.retry_after_s == 0
    assert (decision.limit_requests, decision.remaining_requests) == (10, 9)
    assert (decision.limit_tokens, decision.remaining_tokens) == (1000, 750)
    assert backend.near(decision.reset_requests_s, 6.0)  # one request is 60/10 s
    assert backend.near(decision.reset_tokens_s, 15.0)  # 250 tokens are 250 * 60/1000 s


async def test_capacity_comes_back_at_the_retry_time(backend: Backend) -> None:
    limiter = backend.limiter(period_s=1.0)
    limits = Limits(rpm=5, tpm=None)
    for _ in range(5):
        assert (await limiter.acquire("key", limits, 0)).allowed
    refused = await limiter.acquire("key", limits, 0)
    assert backend.refused(refused, 0.2)
    assert backend.near(refused.retry_after_s, 0.2)

    await backend.advance(refused.retry_after_s)

    again = await limiter.acquire("key", limits, 0)
    assert again.allowed
    assert backend.count(again.remaining_requests, 0, 0.2)
    assert backend.refused(await limiter.acquire("key", limits, 0), 0.2)


async def test_capacity_comes_back_in_fractions_of_a_ms(backend: Backend) -> None:
    # 7 per second: one every 142.857... ms; the retry time is rounded up to the ms.
    limiter = backend.limiter(period_s=1.0)
    limits = Limits(rpm=None, tpm=7)
    assert (await limiter.acquire("key", limits, 7)).allowed
    refused = await limiter.acquire("key", limits, 1)
    assert backend.refused(refused, 1 / 7)
    assert backend.near(refused.retry_after_s, 0.143)

    await backend.advance(refused.retry_after_s)

    assert (await limiter.acquire("key", limits, 1)).allowed


@every_backend
async def test_a_refund_restores_capacity(backend: Backend) -> None:
    limiter = backend.limiter()
    limits = Limits(rpm=None, tpm=100)
    assert (await limiter.acquire("key", limits, 80)).allowed
    assert not (await limiter.acquire("key", limits, 80)).allowed

    await limiter.settle("key", limits, reserved=80, used=20)

    after = await limiter.acquire("key", limits, 80)
    assert after.allowed
    assert backend.count(after.remaining_tokens, 0, 0.6)


async def test_a_refund_never_creates_credit(backend: Backend) -> None:
    limiter = backend.limiter()
    limits = Limits(rpm=None, tpm=100)
    assert (await limiter.acquire("key", limits, 10)).allowed

    await limiter.settle("key", limits, reserved=10, used=0)
    await limiter.settle("key", limits, reserved=50, used=0)
    await limiter.settle("fresh", limits, reserved=50, used=0)

    for subject in ("key", "fresh"):
        full = await limiter.acquire(subject, limits, 100)
        assert full.allowed
        assert backend.refused(await limiter.acquire(subject, limits, 1), 0.6)


async def test_an_extra_charge_puts_the_key_in_debt(backend: Backend) -> None:
    limiter = backend.limiter()
    limits = Limits(rpm=None, tpm=100)
    assert (await limiter.acquire("key", limits, 50)).allowed

    await limiter.settle("key", limits, reserved=50, used=150)

    refused = await limiter.acquire("key", limits, 1)
    assert not refused.allowed
    assert refused.remaining_tokens == 0
    # 150 used + 1 asked - 100 allowed = 51 tokens over, at 0.6 s each.
    assert backend.near(refused.retry_after_s, 51 * 0.6)
    assert backend.near(refused.reset_tokens_s, 150 * 0.6)


async def test_an_extra_charge_is_taken_even_from_an_empty_bucket(backend: Backend) -> None:
    limiter = backend.limiter()
    limits = Limits(rpm=None, tpm=100)

    await limiter.settle("key", limits, reserved=0, used=100)

    refused = await limiter.acquire("key", limits, 1)
    assert backend.refused(refused, 0.6)
    assert backend.near(refused.retry_after_s, 0.6)


async def test_settling_without_a_tpm_or_a_difference_changes_nothing(backend: Backend) -> None:
    limiter = backend.limiter()
    rpm_only = Limits(rpm=2, tpm=None)
    both = Limits(rpm=2, tpm=100)
    assert (await limiter.acquire("key", both, 100)).allowed

    await limiter.settle("key", rpm_only, reserved=0, used=1_000)
    await limiter.settle("key", both, reserved=100, used=100)

    decision = await limiter.acquire("key", Limits(rpm=2, tpm=100), 0)
    assert decision.allowed
    assert backend.count(decision.remaining_requests, 0, 30.0)
    assert backend.count(decision.remaining_tokens, 0, 0.6)


async def test_unlimited_limits_admit_everything(backend: Backend) -> None:
    limiter = backend.limiter()
    unlimited = Limits(rpm=None, tpm=None)

    decisions = [await limiter.acquire("key", unlimited, 10**9) for _ in range(100)]
    await limiter.settle("key", unlimited, reserved=0, used=10**9)

    assert all(d.allowed and not d.too_large for d in decisions)
    assert all(d.retry_after_s == 0 for d in decisions)
    assert {(d.limit_requests, d.remaining_requests, d.reset_requests_s) for d in decisions} == {
        (None, None, None)
    }
    assert {(d.limit_tokens, d.remaining_tokens, d.reset_tokens_s) for d in decisions} == {
        (None, None, None)
    }


async def test_an_unlimited_tpm_ignores_the_token_count(backend: Backend) -> None:
    limiter = backend.limiter()

    decision = await limiter.acquire("key", Limits(rpm=3, tpm=None), 10**12)

    assert decision.allowed
    assert not decision.too_large
    assert decision.remaining_requests == 2


@every_backend
async def test_subjects_are_independent(backend: Backend) -> None:
    limiter = backend.limiter()
    limits = Limits(rpm=1, tpm=10)

    first = [await limiter.acquire(subject, limits, 10) for subject in ("a", "b", "c:{x}")]
    second = [await limiter.acquire(subject, limits, 0) for subject in ("a", "b", "c:{x}")]

    assert all(d.allowed for d in first)
    assert not any(d.allowed for d in second)


async def test_the_largest_limits_and_debts_stay_exact(backend: Backend) -> None:
    # Redis's Lua numbers are doubles: levels must stay exact integers up to here.
    limiter = backend.limiter()
    limits = Limits(rpm=MAX_LIMIT, tpm=MAX_LIMIT)

    full = await limiter.acquire("key", limits, MAX_LIMIT)
    await limiter.settle("key", limits, reserved=MAX_LIMIT, used=10**15)
    in_debt = await limiter.acquire("key", limits, 1)

    assert full.allowed
    assert (full.remaining_requests, full.remaining_tokens) == (MAX_LIMIT - 1, 0)
    assert not in_debt.allowed
    # The debt is capped at 100 periods; one more token is 60/MAX_LIMIT s (a ms, rounded up).
    assert backend.near(in_debt.reset_tokens_s, 6000.0)
    assert backend.near(in_debt.retry_after_s, 5940.001)


async def test_a_negative_token_count_is_a_programming_error(backend: Backend) -> None:
    limiter = backend.limiter()
    with pytest.raises(ValueError, match="tokens"):
        await limiter.acquire("key", Limits(rpm=1, tpm=1), -1)
