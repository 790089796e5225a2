"""The cluster routes source against kmock's Kubernetes emulator, over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from lightkube.models.discovery_v1 import Endpoint, EndpointConditions, EndpointPort
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from switchyard.edge.routing.kubernetes_source import (
    BACKEND_LABEL,
    DEMAND_ANNOTATION,
    KubernetesRoutes,
    ModelBackend,
)
from switchyard.edge.routing.table import Route, RouteTable
from tests.support.kube import MODEL_BACKENDS, Cluster, emulated_cluster

NS = "models"


def backend(name: str, engine: str = "vllm", **spec: Any) -> Any:
    return ModelBackend(
        metadata=ObjectMeta(name=name, namespace=NS), spec={"engine": engine, "model": "m", **spec}
    )


def endpoint_slice(
    name: str, owner: str, ready: dict[str, bool], port: int = 50051
) -> EndpointSlice:
    return EndpointSlice(
        metadata=ObjectMeta(name=name, namespace=NS, labels={BACKEND_LABEL: owner}),
        addressType="IPv4",
        endpoints=[
            Endpoint(addresses=[ip], conditions=EndpointConditions(ready=ok))
            for ip, ok in ready.items()
        ],
        ports=[EndpointPort(name="grpc", port=port), EndpointPort(name="metrics", port=9090)],
    )


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with emulated_cluster(tmp_path) as c:
        yield c


@pytest.fixture
async def routes(cluster: Cluster) -> AsyncIterator[KubernetesRoutes]:
    source = KubernetesRoutes(
        cluster.client, lambda table: None, namespace=None, demand_interval_s=0.05
    )
    task = asyncio.create_task(source.run())
    await asyncio.wait_for(source.synced.wait(), 5)
    yield source
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def eventually(
    check: Callable[[RouteTable], bool], source: KubernetesRoutes, within_s: float = 5.0
) -> None:
    deadline = time.monotonic() + within_s
    while not check(source.table):
        if time.monotonic() > deadline:
            raise AssertionError(f"route table never matched: {source.table.routes}")
        await asyncio.sleep(0.02)


def route(table: RouteTable, name: str) -> Route | None:
    return table.resolve(name)


async def test_a_backend_and_its_ready_endpoints_become_a_route(
    cluster: Cluster, routes: KubernetesRoutes
) -> None:
    await cluster.client.create(backend("llama", servedModelName="llama-3.1-8b", aliases=["llama"]))
    await eventually(lambda t: (r := route(t, "llama")) is not None and r.waking, routes)
    found = route(routes.table, "llama")
    assert found is not None
    assert (found.name, found.engine, found.endpoints) == ("llama-3.1-8b", "vllm", ())

    await cluster.client.create(
        endpoint_slice("llama-adapter-abc", "llama", {"10.0.0.1": True, "10.0.0.2": False})
    )
    await eventually(
        lambda t: (r := route(t, "llama")) is not None and r.endpoints == ("10.0.0.1:50051",),
        routes,
    )
    assert not (route(routes.table, "llama") or found).waking

    # A replica turns ready; another slice of the same Service adds more.
    await cluster.client.patch(
        EndpointSlice,
        "llama-adapter-abc",
        {
            "endpoints": [
                {"addresses": ["10.0.0.1"]},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": True}},
            ]
        },
        namespace=NS,
        patch_type=PatchType.MERGE,
    )
    await cluster.client.create(endpoint_slice("llama-adapter-def", "llama", {"fd00::7": True}))
    await eventually(
        lambda t: (
            (r := route(t, "llama")) is not None
            and set(r.endpoints) == {"10.0.0.1:50051", "10.0.0.2:50051", "[fd00::7]:50051"}
        ),
        routes,
    )

    # Scaled to zero: no slice left, the route stays but is waking.
    await cluster.client.delete(EndpointSlice, "llama-adapter-abc", namespace=NS)
    await cluster.client.delete(EndpointSlice, "llama-adapter-def", namespace=NS)
    await eventually(lambda t: (r := route(t, "llama")) is not None and r.waking, routes)

    await cluster.client.delete(ModelBackend, "llama", namespace=NS)
    await eventually(lambda t: route(t, "llama") is None and len(t) == 0, routes)


async def test_served_name_defaults_to_the_object_name_and_bad_engines_are_skipped(
    cluster: Cluster, routes: KubernetesRoutes
) -> None:
    await cluster.client.create(backend("plain", engine="sglang"))
    await cluster.client.create(backend("weird", engine="ollama"))
    await eventually(lambda t: route(t, "plain") is not None, routes)
    assert route(routes.table, "weird") is None


async def test_a_name_claimed_twice_keeps_the_first_backend(
    cluster: Cluster, routes: KubernetesRoutes
) -> None:
    await cluster.client.create(backend("a", aliases=["shared"]))
    await cluster.client.create(backend("b", engine="tgi", servedModelName="shared"))
    await eventually(lambda t: route(t, "a") is not None, routes)
    await asyncio.sleep(0.1)
    shared = route(routes.table, "shared")
    assert shared is not None
    assert shared.name == "a"
    assert route(routes.table, "b") is None


async def test_demand_stamps_the_backend_at_most_once_per_interval(
    cluster: Cluster, routes: KubernetesRoutes
) -> None:
    await cluster.client.create(backend("sleepy", minReplicas=0))
    await eventually(lambda t: route(t, "sleepy") is not None, routes)
    waking = route(routes.table, "sleepy")
    assert waking is not None
    routes.demand(waking)
    routes.demand(waking)  # within the interval: ignored
    for _ in range(100):
        obj = cluster.emulator.objects[MODEL_BACKENDS, NS, "sleepy"]
        annotations = obj.get("metadata", {}).get("annotations") or {}
        if DEMAND_ANNOTATION in annotations:
            break
        await asyncio.sleep(0.02)
    assert annotations[DEMAND_ANNOTATION].endswith("Z")
    assert len(cluster.emulator["patch"]) == 1
