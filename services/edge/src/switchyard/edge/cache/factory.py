"""The response cache the edge's settings ask for (`EDGE_CACHE`)."""

from __future__ import annotations

from switchyard.edge.cache import NoCache, ResponseCache
from switchyard.edge.cache.memory import MemoryCache
from switchyard.edge.cache.redis import RedisCache
from switchyard.edge.settings import EdgeSettings


def create_cache(settings: EdgeSettings) -> ResponseCache:
    """Off, in this process's memory, or in Redis (shared by the replicas)."""
    if settings.cache == "memory":
        return MemoryCache(
            max_bytes=settings.cache_max_bytes,
            max_entry_bytes=settings.cache_max_entry_bytes,
            ttl_s=settings.cache_ttl_s,
        )
    if settings.cache == "redis":
        url = settings.cache_store_url
        assert url is not None  # the settings refuse "redis" without one
        return RedisCache(
            url,
            max_entry_bytes=settings.cache_max_entry_bytes,
            ttl_s=settings.cache_ttl_s,
            timeout_s=settings.redis_timeout_s,
            connect_timeout_s=settings.redis_connect_timeout_s,
            pool_timeout_s=settings.redis_pool_timeout_s,
            max_connections=settings.redis_max_connections,
        )
    return NoCache()
