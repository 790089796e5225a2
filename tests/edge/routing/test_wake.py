"""One wake signal per backend across edge replicas: through a shared (real) Redis, or,
without one, through the demand annotation the replicas watch (kmock's API server)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

from lightkube.models.meta_v1 import ObjectMeta
from prometheus_client import REGISTRY
from pydantic import SecretStr

from switchyard.edge.redis_pool import RedisConnections
from switchyard.edge.routing.kubernetes_source import KubernetesRoutes, ModelBackend
from switchyard.edge.routing.wake import WakeSignals
from switchyard.edge.settings import EdgeSettings
from tests.support.kube import emulated_cluster
from tests.support.polling import TIMEOUT_S, eventually
from tests.support.redis import running_redis

NS = "models"


def _connections(url: str) -> RedisConnections:
    return RedisConnections(
        url, max_connections=4, timeout_s=1.0, connect_timeout_s=1.0, pool_timeout_s=5.0
    )


def _uncoalesced() -> float:
    return REGISTRY.get_sample_value("switchyard_edge_wake_uncoalesced_total") or 0.0


def _wakes(model: str) -> float:
    return REGISTRY.get_sample_value("switchyard_edge_wake_signals_total", {"model": model}) or 0.0


async def test_one_replica_of_many_sends_a_backends_signal_through_redis(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        replicas = [
            WakeSignals(3600, redis=_connections(server.url), prefix="t1", owner=f"edge-{n}")
            for n in range(2)
        ]
        try:
            asks = [replicas[n % 2].first((NS, "sleepy"), None) for n in range(50)]
            assert sum(await asyncio.gather(*asks)) == 1
            # Another backend's signal is its own.
            assert await replicas[1].first((NS, "other"), None)
            # A signal that could not be sent is forgotten: the next replica to ask sends it.
            await replicas[0].forget((NS, "sleepy"))
            assert await replicas[1].first((NS, "sleepy"), None)
            assert not await replicas[0].first((NS, "sleepy"), None)
        finally:
            for replica in replicas:
                await replica.close()


async def test_the_redis_key_expires_with_the_interval(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        signals = WakeSignals(0.05, redis=_connections(server.url), prefix="t2")
        try:
            assert await signals.first((NS, "sleepy"), None)
            key = signals.key((NS, "sleepy"))
            assert key == "t2:wake:{models/sleepy}"

            async def expired() -> bool:
                return await signals.first((NS, "sleepy"), None)

            await eventually(expired, what="the next interval's signal")
        finally:
            await signals.close()


async def test_a_redis_that_cannot_answer_does_not_stop_a_wake(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        signals = WakeSignals(3600, redis=_connections(server.url), prefix="t3")
        try:
            server.stop()
            before = _uncoalesced()
            assert await signals.first((NS, "sleepy"), None)
            assert await signals.first((NS, "sleepy"), None)  # each one sent, and counted
            assert _uncoalesced() == before + 2
        finally:
            await signals.close()


async def test_without_redis_a_fresh_annotation_means_another_replica_asked() -> None:
    now = 1_000_000.0
    signals = WakeSignals(10, clock=lambda: now)
    assert await signals.first((NS, "sleepy"), None)  # never asked
    assert not await signals.first((NS, "sleepy"), now - 3)  # asked 3 s ago
    assert await signals.first((NS, "sleepy"), now - 10)  # asked an interval ago


@contextlib.asynccontextmanager
async def _following(source: KubernetesRoutes) -> AsyncIterator[KubernetesRoutes]:
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(source.synced.wait(), TIMEOUT_S)
        yield source
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_without_redis_the_second_replica_sees_the_annotation_and_does_not_patch(
    tmp_path: Path,
) -> None:
    async with emulated_cluster(tmp_path) as cluster:
        await cluster.client.create(
            ModelBackend(
                metadata=ObjectMeta(name="sleepy", namespace=NS),
                spec={"engine": "vllm", "model": "m", "servedModelName": "sleepy-wake"},
            )
        )
        first = KubernetesRoutes(cluster.client, lambda table: None, demand_interval_s=3600)
        second = KubernetesRoutes(cluster.client, lambda table: None, demand_interval_s=3600)
        async with _following(first), _following(second):
            await eventually(
                lambda: first.table.resolve("sleepy-wake") and second.table.resolve("sleepy-wake"),
                what="both replicas route the backend",
            )
            route = first.table.resolve("sleepy-wake")
            assert route is not None
            assert route.waking
            before = _wakes("sleepy-wake")

            first.demand(route)
            await eventually(lambda: len(cluster.emulator["patch"]) == 1, what="the patch")

            def seen() -> bool:
                backend = second._backends.get((NS, "sleepy"))
                return backend is not None and backend.demanded_at is not None

            await eventually(seen, what="the second replica sees the annotation")
            stamp = second._backends[(NS, "sleepy")].demanded_at
            assert stamp is not None
            assert abs(stamp - dt.datetime.now(dt.UTC).timestamp()) < 3600
            second.demand(route)
            pending = list(second._pending)
            assert pending, "the second replica did not even consider signalling"
            await asyncio.wait_for(asyncio.gather(*pending), TIMEOUT_S)
            assert len(cluster.emulator["patch"]) == 1
            assert _wakes("sleepy-wake") == before + 1


async def test_the_settings_choose_redis_only_with_the_shared_limiter() -> None:
    memory = EdgeSettings(routes_file=Path("unused.yaml"), demand_interval_s=0.5)
    assert WakeSignals.from_settings(memory)._redis is None
    shared = EdgeSettings(
        routes_file=Path("unused.yaml"),
        demand_interval_s=0.5,
        rate_limit_backend="redis",
        redis_url=SecretStr("redis://127.0.0.1:1/0"),
    )
    signals = WakeSignals.from_settings(shared)
    try:
        assert signals._redis is not None
        assert signals.interval_s == 0.5
    finally:
        await signals.close()
