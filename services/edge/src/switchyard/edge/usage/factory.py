"""The usage store the edge's settings ask for (`EDGE_USAGE_STORE`)."""

from __future__ import annotations

from switchyard.edge.redis_pool import RedisConnections
from switchyard.edge.settings import EdgeSettings
from switchyard.edge.usage.memory import MemoryUsageStore
from switchyard.edge.usage.recorder import UsageRecorder
from switchyard.edge.usage.redis import RedisUsageStore
from switchyard.edge.usage.store import UsageStore


def create_store(settings: EdgeSettings, redis: RedisConnections | None = None) -> UsageStore:
    """In this process's memory, or in Redis (shared by the replicas: `EDGE_REDIS_URL`;
    through `redis`, the edge's shared pool, when given)."""
    if settings.usage_backend == "redis":
        assert settings.redis_url is not None  # the settings refuse "redis" without one
        return RedisUsageStore(
            redis or settings.redis_url.get_secret_value(),
            retention_hours=settings.usage_retention_hours,
            timeout_s=settings.redis_timeout_s,
            connect_timeout_s=settings.redis_connect_timeout_s,
            pool_timeout_s=settings.redis_pool_timeout_s,
            max_connections=settings.redis_max_connections,
        )
    return MemoryUsageStore(
        retention_hours=settings.usage_retention_hours,
        max_rows=settings.usage_memory_max_rows,
    )


def create_recorder(settings: EdgeSettings, redis: RedisConnections | None = None) -> UsageRecorder:
    return UsageRecorder(create_store(settings, redis))
