"""Counting each request's usage as it ends: its row in the store and the per-tenant
Prometheus counters, from the values of its log line.

`Claim` calls `record` once per request, right after the log line, once the answer has
ended (never on the token path). The memory store counts at once; the Redis store's write
is awaited there, by the request's own task: the writes in flight are bounded by the
requests in flight (no queue or task set of their own to bound), a shutdown's drain waits
for them, and a slow Redis delays only the end of a request already answered, by at most
the store's timeouts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import structlog

from switchyard.edge import metrics
from switchyard.edge.usage.records import UsageRecord
from switchyard.edge.usage.store import UsageStore

if TYPE_CHECKING:
    from switchyard.edge.exchange import Exchange

log = structlog.get_logger(__name__)


class UsageRecorder:
    def __init__(self, store: UsageStore, clock: Callable[[], float] = time.time) -> None:
        """`clock`: epoch seconds (which hour a request is counted in)."""
        self.store = store
        self._clock = clock

    def record(self, exchange: Exchange) -> Coroutine[Any, Any, None] | None:
        """Count a finished request (its log line written); returns the store's write to
        await, or None when done. Never raises: usage must not fail a request."""
        try:
            record = UsageRecord.of(exchange, self._clock())
            if record is None:
                return None
            _count(record)
            write = self.store.add(record)
        except Exception:
            log.exception("usage_record_failed", request_id=exchange.request_id)
            return None
        return None if write is None else _guarded(write, exchange.request_id)


def _count(record: UsageRecord) -> None:
    row, counts = record.row, record.counts
    metrics.TENANT_REQUESTS.labels(row.tenant, row.model, row.api, row.status).inc()
    if counts.input_tokens:
        metrics.TENANT_INPUT_TOKENS.labels(row.tenant, row.model).inc(counts.input_tokens)
    if counts.output_tokens:
        metrics.TENANT_OUTPUT_TOKENS.labels(row.tenant, row.model).inc(counts.output_tokens)


async def _guarded(write: Coroutine[Any, Any, None], request_id: str) -> None:
    try:
        await write
    except Exception:  # the store's own failures are handled in it: this is a bug
        log.exception("usage_record_failed", request_id=request_id)
