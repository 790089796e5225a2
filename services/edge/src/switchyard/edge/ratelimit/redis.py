"""The shared limiter: every edge replica checks and charges one Redis, atomically.

One Lua script (`gcra.lua`) reads both levels, decides and writes both in a single round
trip, with Redis's clock, so replicas can neither over-admit between a read and a write
nor disagree about time. A subject's two keys share a hash tag (`{subject}`), so the
script also runs on Redis Cluster; each key expires at its TAT, so an idle subject leaves
nothing behind. When Redis cannot be reached or answers too late, the
configured failure mode decides: "closed" raises `LimiterUnavailable` (the edge answers
503), "open" admits with unknown remaining counts.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from typing import Any, Literal

import structlog
from prometheus_client import Counter
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as BrokenConnection
from redis.exceptions import NoScriptError, RedisError

from switchyard.edge.ratelimit import gcra
from switchyard.edge.ratelimit.base import (
    UNLIMITED,
    Decision,
    LimiterUnavailable,
    Limits,
    RateLimiter,
)
from switchyard.edge.ratelimit.reporting import ACQUIRE_ERRORS, SETTLE_ERRORS, LogThrottle

FailureMode = Literal["closed", "open"]

SCRIPT = (files("switchyard.edge.ratelimit") / "gcra.lua").read_text(encoding="utf-8")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()

# What an unreachable, timed-out, restarting or read-only Redis raises through redis-py.
_STORE_ERRORS = (RedisError, OSError)


class RedisRateLimiter(RateLimiter):
    def __init__(
        self,
        url: str,
        *,
        failure_mode: FailureMode = "closed",
        key_prefix: str = "switchyard:ratelimit",
        timeout_s: float = 0.25,
        period_s: float = 60.0,
        max_connections: int = 64,
        warn_interval_s: float = 10.0,
    ) -> None:
        """`url`: redis://, rediss:// or unix://. `timeout_s` bounds connecting, each
        reply and the wait for a free connection; `max_connections` bounds the pool."""
        if failure_mode not in ("closed", "open"):
            raise ValueError(f"failure_mode must be 'closed' or 'open', not {failure_mode!r}")
        self._fail_open = failure_mode == "open"
        self._failure_mode = failure_mode
        self._period = gcra.period_ms(period_s)
        # "<prefix>:{<subject>}:rpm": the braces make the subject the hash tag (a "}"
        # inside a subject shortens the tag, but equally for both keys).
        self._key_start = f"{key_prefix}:{{"
        # A blocking pool: a burst waits (up to timeout_s) for one of a bounded number of
        # connections instead of opening one per request. One immediate retry, and only
        # for a broken connection (a pooled one that a restarted server closed): never
        # after a timeout, whose script may have run, so nothing is charged twice and a
        # caller waits a few timeout_s at most.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(BrokenConnection,)),
        )
        self._redis = Redis.from_pool(pool)
        self._warnings = LogThrottle(warn_interval_s)
        self._recoveries = LogThrottle(warn_interval_s)
        self._degraded = False

    async def acquire(self, subject: str, limits: Limits, tokens: int) -> Decision:
        if tokens < 0:
            raise ValueError("tokens must be >= 0")
        rpm, tpm = limits.rpm, limits.tpm
        if rpm is None and tpm is None:
            return UNLIMITED
        start = self._key_start
        try:
            allowed, requests, token_level = await self._eval(
                f"{start}{subject}}}:rpm",
                f"{start}{subject}}}:tpm",
                "acquire",
                self._period,
                rpm or 0,
                tpm or 0,
                tokens,
            )
        except _STORE_ERRORS as exc:
            self._failed(ACQUIRE_ERRORS, "acquire", exc)
            # A too-large request is refused either way: no store is needed to know it.
            if self._fail_open or (tpm is not None and tokens > tpm):
                return gcra.without_store(limits, tokens)
            raise LimiterUnavailable() from exc
        if self._degraded:
            self._recovered()
        return gcra.decide(limits, tokens, self._period, allowed == 1, requests, token_level)

    async def settle(self, subject: str, limits: Limits, reserved: int, used: int) -> None:
        tpm = limits.tpm
        delta = used - reserved
        if tpm is None or delta == 0:
            return
        start = self._key_start
        try:
            await self._eval(
                f"{start}{subject}}}:rpm",
                f"{start}{subject}}}:tpm",
                "settle",
                self._period,
                0,
                tpm,
                delta,
                gcra.debt_cap(self._period, tpm),
            )
        except Exception as exc:  # the response is already out: never fail the caller
            self._failed(SETTLE_ERRORS, "settle", exc)
            return
        if self._degraded:
            self._recovered()

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _eval(self, *keys_and_args: str | int) -> Any:
        try:
            return await self._redis.evalsha(SCRIPT_SHA, 2, *keys_and_args)
        except NoScriptError:
            # A restarted or flushed Redis lost its script cache; EVAL runs the script
            # and caches it again, so this costs one round trip, once.
            return await self._redis.eval(SCRIPT, 2, *keys_and_args)

    def _failed(self, counter: Counter, operation: str, exc: Exception) -> None:
        counter.inc()
        self._degraded = True
        suppressed = self._warnings.take()
        if suppressed is not None:
            structlog.get_logger(__name__).warning(
                "ratelimit_store_unavailable",
                operation=operation,
                failure_mode=self._failure_mode,
                error=f"{type(exc).__name__}: {exc}",
                suppressed_since_last=suppressed,
            )

    def _recovered(self) -> None:
        self._degraded = False
        if self._recoveries.take() is not None:
            structlog.get_logger(__name__).info("ratelimit_store_recovered")
