"""Each budget store behind one harness, on a clock the test moves: memory, and Redis on
the session's single server (the script takes its buckets from the caller's clock)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from switchyard.edge.budget import Budgets, MemoryBudgets, RedisBudgets
from tests.support.redis_topology import topology

#: Generous: a loaded test machine must not turn a slow answer into a failure.
TIMEOUT_S = 2.0
UTC = ZoneInfo("UTC")


class WallClock:
    """Seconds since the epoch, moved only when told."""

    def __init__(self, start: str = "2026-12-31T12:00:00+00:00") -> None:
        self.now = datetime.fromisoformat(start).timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, text: str) -> None:
        self.now = datetime.fromisoformat(text).timestamp()


@dataclass
class Stores:
    name: str
    redis_url: str | None
    clock: WallClock = field(default_factory=WallClock)
    prefix: str = field(default_factory=lambda: f"test:{uuid.uuid4().hex}")
    created: list[Budgets] = field(default_factory=list)

    def make(self, zone: ZoneInfo = UTC) -> Budgets:
        store: Budgets
        if self.redis_url is None:
            store = MemoryBudgets(zone=zone, clock=self.clock)
        else:
            store = RedisBudgets(
                self.redis_url,
                zone=zone,
                clock=self.clock,
                key_prefix=self.prefix,
                timeout_s=TIMEOUT_S,
                max_connections=8,
            )
        self.created.append(store)
        return store


@pytest.fixture(params=("memory", "redis"))
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    url = None if request.param == "memory" else topology(request, "single").url
    harness = Stores(request.param, url)
    try:
        yield harness
    finally:
        for store in harness.created:
            await store.aclose()
