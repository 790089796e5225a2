"""The response cache in Redis, shared by every edge replica.

An entry is one string key, `switchyard:cache:{<digest>}`, written with `SET ... PX <ttl>`
and read with `GET`. Each command names one key, so the store works on Redis Cluster as
it is; the braces make the digest the hash tag, which spreads entries evenly over slots.
The topology (one server, Sentinel, Cluster) is the URL's: `switchyard.edge.redis_pool`.

The cache must never fail or slow a request much: the connections are a bounded pool
opened by `start`, each command has a short timeout (`timeout_s`), and any failure —
Redis down, slow, read-only, out of memory — is a miss (`get`) or a skipped write (`put`),
counted in `switchyard_edge_cache_errors` and logged once in a while, never raised.
"""

from __future__ import annotations

import math

import structlog

from switchyard.edge import metrics
from switchyard.edge.cache import CacheKey, ResponseCache
from switchyard.edge.ratelimit.reporting import LogThrottle
from switchyard.edge.redis_pool import STORE_ERRORS, RedisConnections

KEY_PREFIX = "switchyard:cache:"


log = structlog.get_logger(__name__)


class RedisCache(ResponseCache):
    def __init__(
        self,
        url: str,
        *,
        max_entry_bytes: int,
        ttl_s: float,
        timeout_s: float = 0.25,
        connect_timeout_s: float = 2.0,
        pool_timeout_s: float = 5.0,
        max_connections: int = 64,
        warn_interval_s: float = 10.0,
    ) -> None:
        """`url`: any of `switchyard.edge.redis_pool`'s (one server, Sentinel, Cluster).
        `timeout_s` bounds each reply, `connect_timeout_s` opening a connection,
        `pool_timeout_s` the wait for a free one; `max_connections` bounds the pool."""
        if max_entry_bytes < 1 or ttl_s <= 0:
            raise ValueError("max_entry_bytes and ttl_s must be positive")
        self.max_entry_bytes = max_entry_bytes
        self._ttl_ms = max(1, math.ceil(ttl_s * 1000))
        # As the limiter's connections: bounded, on any topology, one immediate retry only
        # for a connection a restarted server or a failover closed (GET and SET are both
        # safe to send twice).
        self._connections = RedisConnections(
            url,
            max_connections=max_connections,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            pool_timeout_s=pool_timeout_s,
        )
        self._max_connections = max_connections
        self._redis = self._connections.client
        self._warnings = LogThrottle(warn_interval_s)
        self._recoveries = LogThrottle(warn_interval_s)
        self._degraded = False

    @staticmethod
    def name(key: CacheKey) -> str:
        """The Redis key of an entry."""
        return f"{KEY_PREFIX}{{{key.digest}}}"

    async def start(self) -> None:
        """Open the pool's connections before the first request; a Redis that cannot be
        reached now is no reason not to start (connections then open on demand)."""
        errors = await self._connections.warm()
        if errors:
            log.warning(
                "cache_store_not_warmed",
                opened=self._max_connections - len(errors),
                error=f"{type(errors[0]).__name__}: {errors[0]}",
                hint="connections will be opened on demand",
            )

    async def get(self, key: CacheKey) -> bytes | None:
        try:
            value = await self._redis.get(self.name(key))
        except STORE_ERRORS as exc:
            self._failed("get", exc)
            return None
        self._ok()
        return value if isinstance(value, bytes) else None

    async def put(self, key: CacheKey, value: bytes) -> None:
        if len(value) > self.max_entry_bytes:
            return
        try:
            await self._redis.set(self.name(key), value, px=self._ttl_ms)
        except STORE_ERRORS as exc:
            self._failed("put", exc)
            return
        self._ok()

    async def aclose(self) -> None:
        await self._connections.close()

    def _failed(self, operation: str, exc: Exception) -> None:
        metrics.CACHE_ERRORS.labels(operation).inc()
        self._degraded = True
        suppressed = self._warnings.take()
        if suppressed is not None:
            log.warning(
                "cache_store_unavailable",
                operation=operation,
                error=f"{type(exc).__name__}: {exc}",
                suppressed_since_last=suppressed,
                effect="served as a miss",
            )

    def _ok(self) -> None:
        if self._degraded:
            self._degraded = False
            if self._recoveries.take() is not None:
                log.info("cache_store_recovered")
