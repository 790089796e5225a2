"""Where usage rows are counted: `MemoryUsageStore` (this process) or `RedisUsageStore`
(shared by every edge replica)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Coroutine
from typing import Any

from switchyard.edge.usage.records import Counts, Row, UsageRecord

#: A usage row as read back: its hour, what it is counted by, its counts.
HourRow = tuple[int, Row, Counts]


class UsageStoreUnavailable(Exception):
    """The store could not be read (the usage API answers 503)."""


class UsageStore(ABC):
    """Counts per row and hour, kept `retention_hours` (the current hour included)."""

    retention_hours: int

    async def start(self) -> None:  # noqa: B027 (most stores have nothing to open)
        """Open what the store needs before the first request."""

    @abstractmethod
    def add(self, record: UsageRecord) -> Coroutine[Any, Any, None] | None:
        """Count `record`: done at once (None), or the write to await. Never raises for
        the store's own failures (they are logged and counted): a write never fails a
        request."""

    @abstractmethod
    async def rows(self, first_hour: int, end_hour: int) -> list[HourRow]:
        """The rows of the hours in [first_hour, end_hour); `UsageStoreUnavailable` when
        the store cannot be read."""

    async def aclose(self) -> None:  # noqa: B027
        """Close what `start` opened."""
