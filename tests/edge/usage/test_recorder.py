"""Recording a finished request: its row, the per-tenant counters, the store the settings
choose; a failing store never fails the request."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr, ValidationError

from switchyard.edge.exchange import Exchange
from switchyard.edge.settings import EdgeSettings
from switchyard.edge.usage.factory import create_store
from switchyard.edge.usage.memory import MemoryUsageStore
from switchyard.edge.usage.recorder import UsageRecorder
from switchyard.edge.usage.records import HOUR_S, UsageRecord
from switchyard.edge.usage.redis import RedisUsageStore
from switchyard.edge.usage.store import HourRow, UsageStore

NOW = 1_800_000_000.0
ROUTES = Path("routes.yaml")


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _exchange(tenant: str = "recorder-t", status: int = 200) -> Exchange:
    ex = Exchange(request_id="r", api="chat", started=0.0, model="demo-vllm")
    ex.key_name, ex.tenant = "k1", tenant
    ex.prompt_tokens, ex.completion_tokens, ex.status, ex.latency_s = 11, 4, status, 0.02
    return ex


async def test_a_request_is_counted_in_its_hour_and_per_tenant() -> None:
    store = MemoryUsageStore(retention_hours=2, max_rows=10)
    recorder = UsageRecorder(store, clock=lambda: NOW)
    labels = {"tenant": "recorder-t", "model": "demo-vllm"}
    before = (
        _sample("switchyard_edge_tenant_input_tokens_total", **labels),
        _sample("switchyard_edge_tenant_output_tokens_total", **labels),
        _sample("switchyard_edge_tenant_requests_total", api="chat", status_class="5xx", **labels),
    )
    assert recorder.record(_exchange(status=503)) is None  # memory: nothing to await
    ((hour, row, counts),) = await store.rows(0, 10**9)
    assert (hour, row.key, row.status, counts.requests) == (int(NOW // HOUR_S), "k1", "5xx", 1)
    after = (
        _sample("switchyard_edge_tenant_input_tokens_total", **labels),
        _sample("switchyard_edge_tenant_output_tokens_total", **labels),
        _sample("switchyard_edge_tenant_requests_total", api="chat", status_class="5xx", **labels),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [11, 4, 1]


class _Broken(UsageStore):
    """A store with a bug: its add raises, or its write does."""

    retention_hours = 1

    def __init__(self, in_write: bool) -> None:
        self.in_write = in_write

    def add(self, record: UsageRecord) -> Coroutine[Any, Any, None] | None:
        if not self.in_write:
            raise RuntimeError("bug in add")
        return self._write()

    async def _write(self) -> None:
        raise RuntimeError("bug in the write")

    async def rows(self, first_hour: int, end_hour: int) -> list[HourRow]:
        return []


@pytest.mark.parametrize("in_write", [False, True])
async def test_a_store_that_fails_never_fails_the_request(in_write: bool) -> None:
    write = UsageRecorder(_Broken(in_write)).record(_exchange())
    if write is not None:
        await write  # logged, not raised


def test_a_request_without_a_key_is_not_counted() -> None:
    store = MemoryUsageStore(retention_hours=1, max_rows=1)
    UsageRecorder(store).record(Exchange(request_id="r", api="chat", started=0.0))
    assert len(store) == 0


async def test_the_store_follows_the_limiter_unless_told() -> None:
    url = SecretStr("redis://127.0.0.1:1/0")
    memory = EdgeSettings(routes_file=ROUTES, usage_retention_hours=5, usage_memory_max_rows=7)
    store = create_store(memory)
    assert isinstance(store, MemoryUsageStore)
    assert (store.retention_hours, store.max_rows) == (5, 7)
    shared = EdgeSettings(routes_file=ROUTES, rate_limit_backend="redis", redis_url=url)
    assert shared.usage_backend == "redis"
    redis_store = create_store(shared)
    assert isinstance(redis_store, RedisUsageStore)
    await redis_store.aclose()  # never opened: nothing listens there
    apart = EdgeSettings(
        routes_file=ROUTES, rate_limit_backend="redis", redis_url=url, usage_store="memory"
    )
    assert isinstance(create_store(apart), MemoryUsageStore)


def test_settings_that_cannot_count_usage_are_refused() -> None:
    with pytest.raises(ValidationError, match="EDGE_USAGE_STORE=redis needs EDGE_REDIS_URL"):
        EdgeSettings(routes_file=ROUTES, usage_store="redis")
    with pytest.raises(ValidationError, match="EDGE_WORKERS > 1 needs EDGE_USAGE_STORE=redis"):
        EdgeSettings(
            routes_file=ROUTES,
            workers=2,
            rate_limit_backend="redis",
            redis_url=SecretStr("redis://127.0.0.1:1/0"),
            usage_store="memory",
        )
    with pytest.raises(ValidationError, match="usage_retention_hours"):
        EdgeSettings(routes_file=ROUTES, usage_retention_hours=0)
