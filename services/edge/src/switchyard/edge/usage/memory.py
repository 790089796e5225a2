"""Usage counted in this process's memory: bounded by hours kept and by rows.

Hours older than the retention are dropped as new hours begin. Past `max_rows` rows (all
hours together) the oldest hours are dropped first; when the current hour alone holds
them all, a record with a new row is not counted (`switchyard_edge_usage_records_lost`,
reason `memory_full`) rather than grow without bound.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import structlog

from switchyard.edge import metrics
from switchyard.edge.ratelimit.reporting import LogThrottle
from switchyard.edge.usage.records import Counts, Row, UsageRecord
from switchyard.edge.usage.store import HourRow, UsageStore

log = structlog.get_logger(__name__)


class MemoryUsageStore(UsageStore):
    def __init__(self, *, retention_hours: int, max_rows: int) -> None:
        if retention_hours < 1 or max_rows < 1:
            raise ValueError("retention_hours and max_rows must be positive")
        self.retention_hours = retention_hours
        self.max_rows = max_rows
        #: Hour → its rows; hours are added in time order, so the dict's first is the oldest.
        self._hours: dict[int, dict[Row, Counts]] = {}
        self._rows = 0
        self._warnings = LogThrottle(60.0)

    def __len__(self) -> int:
        """Rows held, all hours together."""
        return self._rows

    def add(self, record: UsageRecord) -> Coroutine[Any, Any, None] | None:
        hour = self._hours.get(record.hour)
        if hour is None:
            hour = self._open_hour(record.hour)
        counts = hour.get(record.row)
        if counts is None:
            while self._rows >= self.max_rows:
                if not self._drop_oldest(but=record.hour):
                    self._lost()
                    return None
            counts = hour[record.row] = Counts()
            self._rows += 1
        counts.add(record.counts)
        return None

    async def rows(self, first_hour: int, end_hour: int) -> list[HourRow]:
        return [
            (hour, row, Counts(c.requests, c.input_tokens, c.output_tokens, c.latency_ms))
            for hour, rows in self._hours.items()
            if first_hour <= hour < end_hour
            for row, c in rows.items()
        ]

    def _open_hour(self, hour: int) -> dict[Row, Counts]:
        oldest_kept = hour - self.retention_hours + 1
        for old in [h for h in self._hours if h < oldest_kept]:
            self._rows -= len(self._hours.pop(old))
        rows: dict[Row, Counts] = {}
        self._hours[hour] = rows
        if len(self._hours) > 1 and hour < max(self._hours):
            # A record for an earlier hour than the newest (a clock stepped back): keep
            # the dict in time order, so the first hour stays the oldest.
            self._hours = dict(sorted(self._hours.items()))
        return rows

    def _drop_oldest(self, but: int) -> bool:
        """Drop the oldest hour other than `but`; whether there was one."""
        for hour in self._hours:
            if hour != but:
                self._rows -= len(self._hours.pop(hour))
                return True
        return False

    def _lost(self) -> None:
        metrics.USAGE_RECORDS_LOST.labels("memory_full").inc()
        suppressed = self._warnings.take()
        if suppressed is not None:
            log.warning(
                "usage_store_full",
                max_rows=self.max_rows,
                suppressed_since_last=suppressed,
                hint="raise EDGE_USAGE_MEMORY_MAX_ROWS or use EDGE_USAGE_STORE=redis",
            )
