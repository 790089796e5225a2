"""What every test in the suite shares."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest


@pytest.fixture(scope="session", autouse=True)
async def roomy_default_executor() -> None:
    """Every test of a worker runs on one event loop (the session's), whose default
    executor also resolves host names and runs `asyncio.to_thread`. Its default size
    (cores + 4: 6 threads on CI's 2 cores) is soon taken by fixtures that start and stop
    processes in threads, and then an HTTP client's getaddrinfo — kmock's, the operator's
    — waits behind them long enough to time out. Threads here are cheap; timeouts are not."""
    executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="tests-default")
    asyncio.get_running_loop().set_default_executor(executor)


# Redis in each topology (single, Sentinel, Cluster), for any test that asks for it.
from tests.support.redis_topology import (  # noqa: E402, F401
    redis_cluster_set,
    redis_sentinel_set,
    redis_single,
    redis_topology,
)
