"""The shared limiter: every edge replica checks and charges one Redis, atomically.

One Lua script (`gcra.lua`) reads both levels, decides and writes both in a single round
trip, with Redis's clock, so replicas can neither over-admit between a read and a write
nor disagree about time. A subject's two keys share a hash tag (`{subject}`), so the
script also runs on Redis Cluster; each key expires at its TAT, so an idle subject leaves
nothing behind. When Redis cannot be reached or answers too late, the
configured failure mode decides: "closed" raises `LimiterUnavailable` (the edge answers
503); "open" falls back to a limiter in this process's memory that enforces this
process's share of each limit (1/`fallback_processes`, for that many edge processes), so
an outage neither refuses everything nor lifts every limit. The fallback's counts start
empty and are not carried back to Redis when it returns.

Connections: `switchyard.edge.redis_pool.RedisConnections` (one server, Sentinel or
Cluster, bounded, with its three timeouts), all opened (and the script loaded, on every
master) by `start`, before the edge answers its first request.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from importlib.resources import files
from typing import Any, Literal

import structlog
from prometheus_client import Counter
from redis.exceptions import NoScriptError

from switchyard.edge.ratelimit import gcra
from switchyard.edge.ratelimit.base import (
    UNLIMITED,
    Decision,
    LimiterUnavailable,
    Limits,
    RateLimiter,
)
from switchyard.edge.ratelimit.memory import MemoryRateLimiter
from switchyard.edge.ratelimit.reporting import ACQUIRE_ERRORS, SETTLE_ERRORS, LogThrottle
from switchyard.edge.redis_pool import STORE_ERRORS, RedisConnections, connections_for

FailureMode = Literal["closed", "open"]

SCRIPT = (files("switchyard.edge.ratelimit") / "gcra.lua").read_text(encoding="utf-8")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()


def _share(limit: int | None, processes: int) -> int | None:
    return None if limit is None else -(-limit // processes)


class RedisRateLimiter(RateLimiter):
    def __init__(
        self,
        redis: str | RedisConnections,
        *,
        failure_mode: FailureMode = "closed",
        key_prefix: str = "switchyard:ratelimit",
        timeout_s: float = 0.25,
        connect_timeout_s: float = 2.0,
        pool_timeout_s: float = 5.0,
        period_s: float = 60.0,
        max_connections: int = 64,
        fallback_processes: int = 1,
        warn_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`redis`: a URL, any of `switchyard.edge.redis_pool`'s (one server, Sentinel,
        Cluster), or a pool shared with the edge's other stores.
        `timeout_s` bounds each reply, `connect_timeout_s` opening a connection,
        `pool_timeout_s` the wait for a free one; `max_connections` bounds the pool.
        `fallback_processes` and `clock` (seconds, monotonic) are the fail-open
        fallback's."""
        if failure_mode not in ("closed", "open"):
            raise ValueError(f"failure_mode must be 'closed' or 'open', not {failure_mode!r}")
        if fallback_processes < 1:
            raise ValueError("fallback_processes must be at least 1")
        self._failure_mode = failure_mode
        self._period = gcra.period_ms(period_s)
        # "<prefix>:{<subject>}:rpm": the braces make the subject the hash tag (a "}"
        # inside a subject shortens the tag, but equally for both keys).
        self._key_start = f"{key_prefix}:{{"
        # Bounded connections on whichever topology the URL names (redis_pool): a burst
        # waits for one of them instead of opening one per request. One immediate retry,
        # and only for a broken connection (a pooled one that a restarted server or a
        # failover closed): never after a timeout, whose script may have run, so nothing
        # is charged twice.
        self._connections = connections_for(
            redis,
            max_connections=max_connections,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            pool_timeout_s=pool_timeout_s,
        )
        self._redis = self._connections.client
        self._fallback = (
            MemoryRateLimiter(period_s=period_s, clock=clock) if failure_mode == "open" else None
        )
        self._fallback_processes = fallback_processes
        self._warnings = LogThrottle(warn_interval_s)
        self._recoveries = LogThrottle(warn_interval_s)
        self._degraded = False

    async def start(self) -> None:
        """Open every connection of the pool and load the script. A Redis that cannot be
        reached now is no reason not to start: then connections open on demand."""
        errors = await self._connections.warm()
        try:
            if not errors:
                await self._connections.load_script(SCRIPT)  # on every master of a cluster
        except STORE_ERRORS as exc:
            errors.append(exc)
        if errors:
            structlog.get_logger(__name__).warning(
                "ratelimit_store_not_warmed",
                opened=self._connections.max_connections - len(errors),
                error=f"{type(errors[0]).__name__}: {errors[0]}",
                hint="connections will be opened on demand",
            )

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
        except STORE_ERRORS as exc:
            self._failed(ACQUIRE_ERRORS, "acquire", exc)
            # A too-large request is refused either way: no store is needed to know it.
            if tpm is not None and tokens > tpm:
                return gcra.without_store(limits, tokens)
            if self._fallback is None:
                raise LimiterUnavailable() from exc
            share = self._share(limits)
            # A request bigger than this process's share of the TPM (not of the whole)
            # passes only while the share is untouched, and uses all of it.
            cost = tokens if share.tpm is None else min(tokens, share.tpm)
            return await self._fallback.acquire(subject, share, cost)
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
            if self._fallback is not None:
                await self._fallback.settle(subject, self._share(limits), reserved, used)
            return
        if self._degraded:
            self._recovered()

    async def aclose(self) -> None:
        await self._connections.close()
        if self._fallback is not None:
            await self._fallback.aclose()

    def _share(self, limits: Limits) -> Limits:
        """This process's part of `limits` while Redis is away (rounded up)."""
        n = self._fallback_processes
        return Limits(_share(limits.rpm, n), _share(limits.tpm, n))

    async def _eval(self, *keys_and_args: str | int) -> Any:
        try:
            return await self._redis.evalsha(SCRIPT_SHA, 2, *keys_and_args)
        except NoScriptError:
            # A restarted or flushed Redis, a promoted replica or a cluster node added
            # since `start` lacks the script; EVAL runs it and caches it there, so this
            # costs one round trip, once per server.
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
