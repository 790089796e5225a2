"""Usage records: every request's usage counted per tenant, key, model, API and hour
(`records`), kept in memory or Redis with a bounded retention (`memory`, `redis`), read
through the admin API's `GET /admin/v1/usage` (`query`, `routes`), and counted per tenant
and model for Prometheus (`recorder`)."""

from switchyard.edge.usage.memory import MemoryUsageStore
from switchyard.edge.usage.recorder import UsageRecorder
from switchyard.edge.usage.records import Counts, Row, UsageRecord
from switchyard.edge.usage.store import UsageStore, UsageStoreUnavailable

__all__ = [
    "Counts",
    "MemoryUsageStore",
    "Row",
    "UsageRecord",
    "UsageRecorder",
    "UsageStore",
    "UsageStoreUnavailable",
]
