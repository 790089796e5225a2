"""Per-key request (RPM) and token (TPM) limits, in memory or shared through Redis.

    limiter = create_limiter("redis", redis=url, failure_mode="closed")
    await limiter.start()  # Redis: the pool's connections opened, the script loaded
    decision = await limiter.acquire(key_name, Limits(rpm=60, tpm=90_000), reserved)
    ...  # 429 unless decision.allowed; on LimiterUnavailable, 503
    await limiter.settle(key_name, limits, reserved, used)

The memory backend counts per process: with several replicas (or uvicorn workers) use
Redis, or each one admits the full limit.
"""

from __future__ import annotations

from typing import Literal

from switchyard.edge.ratelimit.base import (
    MAX_LIMIT,
    Decision,
    LimiterUnavailable,
    Limits,
    RateLimiter,
)
from switchyard.edge.ratelimit.memory import MemoryRateLimiter
from switchyard.edge.ratelimit.redis import FailureMode, RedisRateLimiter
from switchyard.edge.redis_pool import RedisConnections

__all__ = [
    "MAX_LIMIT",
    "Decision",
    "FailureMode",
    "LimiterUnavailable",
    "Limits",
    "MemoryRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "create_limiter",
]


def create_limiter(
    backend: Literal["memory", "redis"],
    *,
    redis: str | RedisConnections | None,
    failure_mode: FailureMode,
    key_prefix: str = "switchyard:ratelimit",
    timeout_s: float = 0.25,
    connect_timeout_s: float = 2.0,
    pool_timeout_s: float = 5.0,
    max_connections: int = 64,
    fallback_processes: int = 1,
    period_s: float = 60.0,
) -> RateLimiter:
    """The limiter for the edge's settings. `failure_mode` and the Redis options only
    matter for "redis" (see `RedisRateLimiter`: `redis` is a URL or a shared pool);
    `period_s` is a minute except in tests."""
    if backend == "memory":
        return MemoryRateLimiter(period_s=period_s)
    if backend == "redis":
        if not redis:
            raise ValueError("the redis rate-limit backend needs a Redis URL")
        return RedisRateLimiter(
            redis,
            failure_mode=failure_mode,
            key_prefix=key_prefix,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            pool_timeout_s=pool_timeout_s,
            max_connections=max_connections,
            fallback_processes=fallback_processes,
            period_s=period_s,
        )
    raise ValueError(f"unknown rate-limit backend {backend!r}")
