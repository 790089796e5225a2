"""A Redis that goes away, freezes or comes back: the failure policy, then recovery."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from switchyard.edge.ratelimit import FailureMode, LimiterUnavailable, Limits, RedisRateLimiter
from switchyard.edge.ratelimit import redis as redis_limiter
from switchyard.edge.ratelimit.reporting import LogThrottle
from tests.edge.ratelimit.harness import TIMEOUT_S, FakeClock
from tests.support.redis import RedisServer, running_redis

LIMITS = Limits(rpm=10, tpm=1000)


@pytest.fixture(params=["tcp", "unix"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the test's own, free to be stopped."""
    with running_redis(tmp_path, unix_socket=request.param == "unix") as server:
        yield server


def limiter(
    server: RedisServer,
    failure_mode: FailureMode = "closed",
    timeout_s: float = TIMEOUT_S,
    warn_interval_s: float = 10.0,
    fallback_processes: int = 1,
    clock: FakeClock | None = None,
) -> RedisRateLimiter:
    """A limiter whose fail-open fallback runs on a clock that moves only when told."""
    return RedisRateLimiter(
        server.url,
        key_prefix=f"test:{uuid.uuid4().hex}",
        failure_mode=failure_mode,
        timeout_s=timeout_s,
        warn_interval_s=warn_interval_s,
        fallback_processes=fallback_processes,
        clock=clock or FakeClock(),
    )


def store_errors(operation: str) -> float:
    value = REGISTRY.get_sample_value(
        "switchyard_edge_ratelimit_store_errors_total", {"operation": operation}
    )
    return value or 0.0


def events(logs: Sequence[Mapping[str, Any]], event: str) -> list[Mapping[str, Any]]:
    return [log for log in logs if log["event"] == event]


async def test_a_lost_store_fails_closed_or_open_then_both_recover(server: RedisServer) -> None:
    closed = limiter(server, failure_mode="closed")
    opened = limiter(server, failure_mode="open")
    try:
        assert (await closed.acquire("key", LIMITS, 10)).allowed
        assert (await opened.acquire("key", LIMITS, 10)).allowed
        errors_before = store_errors("acquire")

        server.stop()
        with capture_logs() as logs:
            for i in range(5):
                with pytest.raises(LimiterUnavailable) as refused:
                    await closed.acquire("key", LIMITS, 10)
                assert refused.value.retry_after_s > 0
                admitted = await opened.acquire("key", LIMITS, 10)
                assert admitted.allowed
                # The fallback's counts: this process's own, from empty.
                assert (admitted.limit_requests, admitted.limit_tokens) == (10, 1000)
                assert admitted.remaining_requests == 9 - i
                assert admitted.remaining_tokens == 1000 - 10 * (i + 1)

        assert store_errors("acquire") - errors_before == 10
        warnings = events(logs, "ratelimit_store_unavailable")
        # One line per limiter for the whole outage, not one per request.
        assert [(w["log_level"], w["failure_mode"]) for w in warnings] == [
            ("warning", "closed"),
            ("warning", "open"),
        ]

        server.start()  # same address, empty, no scripts loaded
        with capture_logs() as logs:
            for recovered in (closed, opened):
                decision = await recovered.acquire("key", LIMITS, 10)
                assert decision.allowed
                assert (decision.remaining_requests, decision.remaining_tokens) == (9, 990)
        assert len(events(logs, "ratelimit_store_recovered")) == 2
    finally:
        await closed.aclose()
        await opened.aclose()


async def test_a_restart_between_two_calls_fails_neither(server: RedisServer) -> None:
    # The pooled connection is dead and the new server has no scripts: both are mended
    # inside the next call.
    subject = limiter(server)
    try:
        assert (await subject.acquire("key", LIMITS, 10)).allowed
        server.stop()
        server.start()
        errors_before = store_errors("acquire")

        decision = await subject.acquire("key", LIMITS, 10)

        assert decision.allowed
        assert decision.remaining_requests == 9  # the restarted server starts empty
        assert store_errors("acquire") == errors_before
    finally:
        await subject.aclose()


@pytest.mark.parametrize("server", ["tcp"], indirect=True)
async def test_settle_failures_are_counted_never_raised(server: RedisServer) -> None:
    subject = limiter(server)
    try:
        server.stop()
        errors_before = store_errors("settle")

        await subject.settle("key", LIMITS, reserved=10, used=500)
        await subject.settle("key", LIMITS, reserved=500, used=10)

        assert store_errors("settle") - errors_before == 2
    finally:
        await subject.aclose()


@pytest.mark.parametrize("server", ["tcp"], indirect=True)
async def test_the_warning_comes_once_per_window(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window on a clock the test moves: a slow machine cannot end it early.
    clock = FakeClock()
    monkeypatch.setattr(redis_limiter, "LogThrottle", functools.partial(LogThrottle, clock=clock))
    subject = limiter(server, warn_interval_s=0.3)
    try:
        server.stop()
        with capture_logs() as logs:
            for _ in range(3):
                with pytest.raises(LimiterUnavailable):
                    await subject.acquire("key", LIMITS, 1)
            clock.now += 0.3
            with pytest.raises(LimiterUnavailable):
                await subject.acquire("key", LIMITS, 1)

        warnings = events(logs, "ratelimit_store_unavailable")
        assert [w["suppressed_since_last"] for w in warnings] == [0, 2]
    finally:
        await subject.aclose()


@pytest.mark.parametrize("server", ["tcp"], indirect=True)
async def test_a_frozen_store_times_out_instead_of_hanging(server: RedisServer) -> None:
    closed = limiter(server, timeout_s=0.5)
    opened = limiter(server, timeout_s=0.5, failure_mode="open")
    try:
        assert (await closed.acquire("key", LIMITS, 1)).allowed
        assert (await opened.acquire("key", LIMITS, 1)).allowed

        server.pause()
        try:
            async with asyncio.timeout(30.0):  # a hang fails here (two 0.5 s timeouts pass)
                with pytest.raises(LimiterUnavailable):
                    await closed.acquire("key", LIMITS, 1)
                decision = await opened.acquire("key", LIMITS, 1)
            assert decision.allowed
            assert decision.remaining_requests == 9  # the fallback's, from empty
        finally:
            server.resume()

        for recovered in (closed, opened):  # Redis's counts again (the timed-out script
            # may or may not have run once the server woke up)
            assert (await recovered.acquire("key", LIMITS, 1)).remaining_requests in (7, 8)
    finally:
        await closed.aclose()
        await opened.aclose()


@pytest.mark.parametrize("server", ["tcp"], indirect=True)
async def test_a_too_large_request_is_refused_even_without_a_store(server: RedisServer) -> None:
    closed = limiter(server)
    try:
        server.stop()

        decision = await closed.acquire("key", LIMITS, 1001)

        assert not decision.allowed
        assert decision.too_large
    finally:
        await closed.aclose()


@pytest.mark.parametrize("server", ["tcp"], indirect=True)
async def test_fail_open_keeps_this_process_s_share_of_each_limit(server: RedisServer) -> None:
    # Two edge processes share the limits: while Redis is away, each enforces half.
    clock = FakeClock()
    opened = limiter(server, failure_mode="open", fallback_processes=2, clock=clock)
    limits = Limits(rpm=4, tpm=1000)
    try:
        server.stop()
        first, second, third = [await opened.acquire("a", limits, 10) for _ in range(3)]
        assert first.allowed
        assert second.allowed
        assert not third.allowed
        assert third.retry_after_s > 0
        assert (third.limit_requests, third.limit_tokens) == (2, 500)

        # Bigger than the share, not than the limit: only while the share is untouched.
        assert (await opened.acquire("b", limits, 800)).allowed
        assert not (await opened.acquire("b", limits, 1)).allowed
        assert (await opened.acquire("c", limits, 1001)).too_large  # never admissible

        # Usage corrections land in the fallback too.
        assert (await opened.acquire("d", limits, 10)).allowed
        await opened.settle("d", limits, reserved=10, used=500)
        assert not (await opened.acquire("d", limits, 10)).allowed

        clock.now += 60.0  # a period later, the shares are back
        assert all([(await opened.acquire(s, limits, 10)).allowed for s in "abd"])
    finally:
        await opened.aclose()
