"""The cache the settings ask for (`EDGE_CACHE`), and the settings' own checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from switchyard.edge.cache import NoCache
from switchyard.edge.cache.factory import create_cache
from switchyard.edge.cache.memory import MemoryCache
from switchyard.edge.cache.redis import RedisCache
from switchyard.edge.settings import EdgeSettings


def settings(tmp_path: Path, **fields: Any) -> EdgeSettings:
    return EdgeSettings(routes_file=tmp_path / "routes.yaml", **fields)


def test_the_cache_is_off_unless_asked_for(tmp_path: Path) -> None:
    assert isinstance(create_cache(settings(tmp_path)), NoCache)
    assert not create_cache(settings(tmp_path)).enabled


def test_memory_takes_its_bounds_from_the_settings(tmp_path: Path) -> None:
    cache = create_cache(
        settings(tmp_path, cache="memory", cache_max_bytes=4096, cache_max_entry_bytes=512)
    )
    assert isinstance(cache, MemoryCache)
    assert (cache.max_bytes, cache.max_entry_bytes) == (4096, 512)


async def test_redis_uses_its_own_url_else_the_limiter_s(tmp_path: Path) -> None:
    own = create_cache(
        settings(
            tmp_path,
            cache="redis",
            redis_url="redis://limits:6379/0",
            cache_redis_url="redis://cache:6379/1",
        )
    )
    shared = create_cache(settings(tmp_path, cache="redis", redis_url="redis://limits:6379/0"))
    try:
        assert isinstance(own, RedisCache)
        assert isinstance(shared, RedisCache)
        assert own._redis.connection_pool.connection_kwargs["host"] == "cache"
        assert shared._redis.connection_pool.connection_kwargs["host"] == "limits"
    finally:
        await own.aclose()
        await shared.aclose()


def test_redis_without_any_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="EDGE_CACHE=redis needs EDGE_CACHE_REDIS_URL"):
        settings(tmp_path, cache="redis")
