"""The Responses store the edge's settings ask for (`EDGE_RESPONSES_STORE`)."""

from __future__ import annotations

from switchyard.edge.openai_responses.memory import MemoryResponseStore
from switchyard.edge.openai_responses.store import ResponseStore
from switchyard.edge.redis_pool import RedisConnections
from switchyard.edge.settings import EdgeSettings


def create_response_store(settings: EdgeSettings) -> ResponseStore:
    """In this process's memory, or in Redis (shared by the replicas, with the jobs)."""
    if settings.responses_store == "redis":
        from switchyard.edge.openai_responses.redis_store import RedisResponseStore

        url = settings.responses_store_url
        assert url is not None  # the settings refuse "redis" without one
        connections = RedisConnections(
            url,
            max_connections=settings.redis_max_connections,
            timeout_s=settings.redis_timeout_s,
            connect_timeout_s=settings.redis_connect_timeout_s,
            pool_timeout_s=settings.redis_pool_timeout_s,
        )
        return RedisResponseStore(
            connections, ttl_s=settings.responses_ttl_s, max_bytes=settings.responses_max_bytes
        )
    return MemoryResponseStore(
        max_entries=settings.responses_max_entries,
        ttl_s=settings.responses_ttl_s,
        max_bytes=settings.responses_max_bytes,
    )
