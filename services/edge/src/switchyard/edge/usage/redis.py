"""Usage counted in Redis, shared by every edge replica.

One hash per hour, `switchyard:usage:{<YYYY-MM-DDTHH>}` (UTC); its fields are
`<tenant>\\t<key>\\t<model>\\t<api>\\t<status>\\t<cached>\\t<counter>` (names and model
names hold no tab), one per counter (`records.COUNTERS`), counted with HINCRBY. A
request's write is one pipeline of HINCRBYs and an EXPIRE on that one hash, so each
command touches one key and the store works on Redis Cluster as it is. The EXPIRE ends
the hour once it is older than the retention. The rows of an hour are bounded by the
keys file and the served models (no client input becomes a field).

A failed write (Redis down, slow, read-only) is logged once in a while and counted in
`switchyard_edge_usage_records_lost` (reason `store_error`); it never fails a request.
Nothing is buffered for later: a lost write is lost, and the counter says how many.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import structlog

from switchyard.edge import metrics
from switchyard.edge.ratelimit.reporting import LogThrottle
from switchyard.edge.redis_pool import STORE_ERRORS, RedisConnections, connections_for
from switchyard.edge.usage.records import COUNTERS, HOUR_S, Counts, Row, UsageRecord
from switchyard.edge.usage.store import HourRow, UsageStore, UsageStoreUnavailable

log = structlog.get_logger(__name__)

KEY_PREFIX = "switchyard:usage:"
#: Hours read in one pipeline by a query (a range of 90 days is 2160 hours).
READ_BATCH = 168


def hour_key(hour: int, prefix: str = KEY_PREFIX) -> str:
    """The hash of `hour` (hours since the epoch)."""
    stamp = datetime.fromtimestamp(hour * HOUR_S, UTC).strftime("%Y-%m-%dT%H")
    return f"{prefix}{{{stamp}}}"


def field(row: Row, counter: str) -> str:
    return "\t".join((*row[:5], "1" if row.cached else "0", counter))


def parse_field(name: str) -> tuple[Row, str] | None:
    parts = name.split("\t")
    if len(parts) != 7 or parts[6] not in COUNTERS:
        return None  # not ours (or a later version's): skipped, never an error
    tenant, key, model, api, status, cached, counter = parts
    return Row(tenant, key, model, api, status, cached == "1"), counter


class RedisUsageStore(UsageStore):
    def __init__(
        self,
        redis: str | RedisConnections,
        *,
        retention_hours: int,
        key_prefix: str = KEY_PREFIX,
        timeout_s: float = 0.25,
        connect_timeout_s: float = 2.0,
        pool_timeout_s: float = 5.0,
        max_connections: int = 16,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`redis`: a URL, any of `switchyard.edge.redis_pool`'s (one server, Sentinel,
        Cluster), or a pool shared with the edge's other stores;
        `clock` (epoch seconds) sets each hour's time to live."""
        if retention_hours < 1:
            raise ValueError("retention_hours must be positive")
        self.retention_hours = retention_hours
        self._prefix = key_prefix
        self._clock = clock
        self._connections = connections_for(
            redis,
            max_connections=max_connections,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            pool_timeout_s=pool_timeout_s,
        )
        self._redis = self._connections.client
        self._warnings = LogThrottle(10.0)

    async def start(self) -> None:
        """Open the connections now; a Redis away now is no reason not to start."""
        errors = await self._connections.warm()
        if errors:
            log.warning(
                "usage_store_not_warmed",
                opened=self._connections.max_connections - len(errors),
                error=f"{type(errors[0]).__name__}: {errors[0]}",
                hint="connections will be opened on demand",
            )

    def add(self, record: UsageRecord) -> Coroutine[Any, Any, None] | None:
        return self._write(record)

    async def _write(self, record: UsageRecord) -> None:
        key = hour_key(record.hour, self._prefix)
        # The hour leaves the retention window when hour + retention_hours begins.
        ttl_s = max(1, int((record.hour + self.retention_hours) * HOUR_S - self._clock()))
        pipe = self._redis.pipeline(transaction=False)
        for counter, value in zip(COUNTERS, _values(record.counts), strict=True):
            if value:
                pipe.hincrby(key, field(record.row, counter), value)
        pipe.expire(key, ttl_s)
        try:
            await pipe.execute()
        except STORE_ERRORS as exc:
            self._failed(exc)

    async def rows(self, first_hour: int, end_hour: int) -> list[HourRow]:
        found: list[HourRow] = []
        hours = range(first_hour, end_hour)
        for start in range(0, len(hours), READ_BATCH):
            batch = hours[start : start + READ_BATCH]
            pipe = self._redis.pipeline(transaction=False)
            for hour in batch:
                pipe.hgetall(hour_key(hour, self._prefix))
            try:
                replies = await pipe.execute()
            except STORE_ERRORS as exc:
                raise UsageStoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
            for hour, fields in zip(batch, replies, strict=True):
                found += _hour_rows(hour, fields)
        return found

    async def aclose(self) -> None:
        await self._connections.close()

    def _failed(self, exc: Exception) -> None:
        metrics.USAGE_RECORDS_LOST.labels("store_error").inc()
        suppressed = self._warnings.take()
        if suppressed is not None:
            log.warning(
                "usage_store_unavailable",
                error=f"{type(exc).__name__}: {exc}",
                suppressed_since_last=suppressed,
                effect="this request's usage is not counted",
            )


def _values(counts: Counts) -> tuple[int, int, int, int]:
    return counts.requests, counts.input_tokens, counts.output_tokens, counts.latency_ms


def _hour_rows(hour: int, fields: dict[bytes, bytes]) -> list[HourRow]:
    rows: dict[Row, Counts] = {}
    for name, value in fields.items():
        parsed = parse_field(name.decode(errors="replace"))
        if parsed is None:
            continue
        row, counter = parsed
        counts = rows.setdefault(row, Counts())
        setattr(counts, counter, getattr(counts, counter) + int(value))
    return [(hour, row, counts) for row, counts in rows.items()]
