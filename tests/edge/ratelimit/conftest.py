"""Fixtures: each backend behind one harness: memory, Redis on one server, and (for the
cases marked `@every_backend`) Sentinel and Cluster: the session's servers,
`tests.support.redis_topology`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.edge.ratelimit.harness import BACKENDS, Backend
from tests.support.redis_topology import topology


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    url = None
    if request.param != "memory":
        url = topology(request, request.param.removeprefix("redis-")).url
    harness = Backend(request.param, url)
    yield harness
    for limiter in harness.created:
        await limiter.aclose()
