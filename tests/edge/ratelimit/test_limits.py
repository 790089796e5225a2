"""Configuration the limiter refuses up front, rather than answering wrongly later."""

from __future__ import annotations

import pytest

from switchyard.edge.ratelimit import MAX_LIMIT, Limits, MemoryRateLimiter, create_limiter


@pytest.mark.parametrize("value", [0, -1, MAX_LIMIT + 1])
def test_limits_are_positive_and_bounded(value: int) -> None:
    with pytest.raises(ValueError, match="rpm"):
        Limits(rpm=value, tpm=None)
    with pytest.raises(ValueError, match="tpm"):
        Limits(rpm=None, tpm=value)


def test_the_largest_limits_are_accepted() -> None:
    assert Limits(rpm=MAX_LIMIT, tpm=MAX_LIMIT).tpm == MAX_LIMIT


@pytest.mark.parametrize("period_s", [0.0, 0.0004, 61.0])
def test_the_period_is_bounded(period_s: float) -> None:
    with pytest.raises(ValueError, match="period_s"):
        MemoryRateLimiter(period_s=period_s)


def test_the_redis_backend_needs_a_url() -> None:
    with pytest.raises(ValueError, match="needs a Redis URL"):
        create_limiter("redis", redis=None, failure_mode="closed")


def test_an_unknown_failure_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="failure_mode"):
        create_limiter("redis", redis="redis://127.0.0.1:1", failure_mode="ajar")  # type: ignore[arg-type]
