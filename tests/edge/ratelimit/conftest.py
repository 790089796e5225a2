"""Fixtures: a real redis-server for the session, and each backend behind one harness."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.edge.ratelimit.harness import BACKENDS, Backend
from tests.support.redis import RedisServer, running_redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    url = None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
    harness = Backend(request.param, url)
    yield harness
    for limiter in harness.created:
        await limiter.aclose()
