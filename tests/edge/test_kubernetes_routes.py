"""The edge on the cluster routes source: ModelBackends appear, disappear and wake up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import openai
import pytest
from lightkube.models.discovery_v1 import Endpoint, EndpointConditions, EndpointPort
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.discovery_v1 import EndpointSlice

from switchyard.edge.routing.kubernetes_source import BACKEND_LABEL, DEMAND_ANNOTATION, ModelBackend
from tests.support.edge import Edge, start_edge
from tests.support.kube import MODEL_BACKENDS, Cluster, emulated_cluster
from tests.support.stacks import Stack

NS = "models"


@pytest.fixture
async def cluster_edge(tmp_path: Path) -> AsyncIterator[tuple[Cluster, Edge]]:
    async with emulated_cluster(tmp_path) as cluster:
        env = {
            "EDGE_ROUTES_SOURCE": "kubernetes",
            "KUBECONFIG": str(cluster.kubeconfig),
            "EDGE_DEMAND_INTERVAL_S": "0.2",
        }
        edge = await asyncio.to_thread(start_edge, tmp_path, {}, env=env)
        try:
            yield cluster, edge
        finally:
            await asyncio.to_thread(edge.stop)


async def _until(check: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def _slice(adapter_port: int, ready: bool = True) -> EndpointSlice:
    return EndpointSlice(
        metadata=ObjectMeta(name="demo-adapter-x1", namespace=NS, labels={BACKEND_LABEL: "demo"}),
        addressType="IPv4",
        endpoints=[Endpoint(addresses=["127.0.0.1"], conditions=EndpointConditions(ready=ready))],
        ports=[EndpointPort(name="grpc", port=adapter_port)],
    )


async def test_backends_come_and_go_and_wake_on_demand(
    cluster_edge: tuple[Cluster, Edge], engines: dict[str, Stack]
) -> None:
    cluster, edge = cluster_edge
    client = edge.client()
    ask = {"model": "demo-vllm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

    # Synced with an empty cluster: ready, but nothing to route.
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{edge.url}/readyz")).status_code == 200
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(**ask)  # type: ignore[call-overload]

    # A backend with a ready replica is routable within seconds.
    await cluster.client.create(
        ModelBackend(
            metadata=ObjectMeta(name="demo", namespace=NS),
            spec={"engine": "vllm", "model": "m", "servedModelName": "demo-vllm"},
        )
    )
    adapter_port = engines["vllm"].adapter.port
    await cluster.client.create(_slice(adapter_port))

    async def answers() -> bool:
        try:
            reply = await client.chat.completions.create(**ask)  # type: ignore[call-overload]
        except (openai.NotFoundError, openai.InternalServerError):
            return False
        return bool(reply.choices[0].message.content)

    await _until(answers)

    # Scaled to zero: 503 with Retry-After, and the edge asks the operator for a replica.
    await cluster.client.delete(EndpointSlice, "demo-adapter-x1", namespace=NS)

    async def waking() -> bool:
        try:
            await client.chat.completions.create(**ask)  # type: ignore[call-overload]
        except openai.InternalServerError as error:
            return error.status_code == 503 and int(error.response.headers["retry-after"]) >= 1
        return False

    await _until(waking)

    async def demanded() -> bool:
        annotations = (
            cluster.emulator.objects[MODEL_BACKENDS, NS, "demo"]
            .get("metadata", {})
            .get("annotations")
        )
        return bool(annotations and DEMAND_ANNOTATION in annotations)

    await _until(demanded)

    # Removed: no longer routed at all.
    await cluster.client.delete(ModelBackend, "demo", namespace=NS)

    async def gone() -> bool:
        try:
            await client.chat.completions.create(**ask)  # type: ignore[call-overload]
        except openai.NotFoundError:
            return True
        except openai.InternalServerError:
            return False
        return False

    await _until(gone)
