"""The edge on the cluster routes source: ModelBackends appear, disappear and wake up; a
name stays with its first claimant, with the operator saying why a newcomer is not served."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import kmock
import openai
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.models.discovery_v1 import Endpoint, EndpointConditions, EndpointPort
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from switchyard.edge.routing.kubernetes_source import BACKEND_LABEL, DEMAND_ANNOTATION, ModelBackend
from tests.operator.apiserver import BACKENDS, ApiServer
from tests.operator.harness import FakeClock, FakeLoad, OperatorThread, example, operator_settings
from tests.support.edge import Edge, start_edge
from tests.support.kube import MODEL_BACKENDS, Cluster, emulated_cluster, write_kubeconfig
from tests.support.polling import eventually
from tests.support.processes import free_port
from tests.support.stacks import Stack

NS = "models"


@pytest.fixture
async def cluster_edge(tmp_path: Path) -> AsyncIterator[tuple[Cluster, Edge]]:
    async with emulated_cluster(tmp_path) as cluster:
        env = {
            "EDGE_ROUTES_SOURCE": "kubernetes",
            "KUBECONFIG": str(cluster.kubeconfig),
            "EDGE_DEMAND_INTERVAL_S": "0.2",
            # These tests look at the 503 of a waking model: no hold (test_hold_on_wake's).
            "EDGE_HOLD_MAX_PER_MODEL": "0",
        }
        edge = await asyncio.to_thread(start_edge, tmp_path, {}, env=env)
        try:
            yield cluster, edge
        finally:
            await asyncio.to_thread(edge.stop)


def _slice(
    adapter_port: int,
    ready: bool = True,
    *,
    backend: str = "demo",
    namespace: str = NS,
    name: str = "demo-adapter-x1",
) -> EndpointSlice:
    return EndpointSlice(
        metadata=ObjectMeta(name=name, namespace=namespace, labels={BACKEND_LABEL: backend}),
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

    await eventually(answers, what="the model answers")

    # Scaled to zero: 503 with Retry-After, and the edge asks the operator for a replica.
    await cluster.client.delete(EndpointSlice, "demo-adapter-x1", namespace=NS)

    async def waking() -> bool:
        try:
            await client.chat.completions.create(**ask)  # type: ignore[call-overload]
        except openai.InternalServerError as error:
            return error.status_code == 503 and int(error.response.headers["retry-after"]) >= 1
        return False

    await eventually(waking, what="503 with Retry-After while scaled to zero")

    async def demanded() -> bool:
        annotations = (
            cluster.emulator.objects[MODEL_BACKENDS, NS, "demo"]
            .get("metadata", {})
            .get("annotations")
        )
        return bool(annotations and DEMAND_ANNOTATION in annotations)

    await eventually(demanded, what="the demand annotation")

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

    await eventually(gone, what="404 once the backend is removed")


async def _retry_after(client: openai.AsyncOpenAI, model: str) -> str | None:
    """The Retry-After of a 503 for `model` (None: it did not answer 503)."""
    ask = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    try:
        await client.chat.completions.create(**ask)  # type: ignore[call-overload]
    except openai.InternalServerError as error:
        if error.status_code == 503:
            return str(error.response.headers["retry-after"])
    except openai.NotFoundError:
        pass
    return None


async def test_a_waking_model_asks_for_the_expected_rest_of_its_wake(
    cluster_edge: tuple[Cluster, Edge],
) -> None:
    """Issue 10: Retry-After 1 while a wake takes 6-15 s made the openai SDK give up. Until
    the operator has timed a wake, the edge asks for EDGE_WAKE_RETRY_AFTER_S (10 s); then
    for as long as the last wake took (here 25 s: the operator has not scaled up yet)."""
    cluster, edge = cluster_edge
    client = edge.client()
    await cluster.client.create(
        ModelBackend(
            metadata=ObjectMeta(name="sleepy", namespace=NS),
            spec={"engine": "tgi", "model": "m", "scaling": {"minReplicas": 0}},
        )
    )

    async def asks(seconds: str) -> bool:
        return await _retry_after(client, "sleepy") == seconds

    await eventually(lambda: asks("10"), what="Retry-After 10")
    await cluster.client.patch(
        ModelBackend.Status,
        "sleepy",
        {"status": {"lastWakeSeconds": 25}},
        namespace=NS,
        patch_type=PatchType.MERGE,
    )
    await eventually(lambda: asks("25"), what="Retry-After 25")


@pytest.fixture
async def operated_edge(tmp_path: Path) -> AsyncIterator[tuple[ApiServer, AsyncClient, Edge]]:
    """The operator (every namespace) and an edge process, on one emulated API server that
    stamps creation times and writes statuses as a real one does."""
    async with ApiServer() as api, kmock.Server(api) as for_operator, kmock.Server(api) as for_us:
        api.register_crd()
        operator = OperatorThread(
            str(for_operator.url),
            operator_settings("unused", namespaces=[]),
            FakeLoad(),
            FakeClock(),
        )
        await operator.start()
        url = str(for_us.url).rstrip("/")
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig.yaml", url)
        env = {"EDGE_ROUTES_SOURCE": "kubernetes", "KUBECONFIG": str(kubeconfig)}
        edge = await asyncio.to_thread(start_edge, tmp_path, {}, env=env)
        client = AsyncClient(config=KubeConfig.from_file(kubeconfig), field_manager="tests")
        try:
            yield api, client, edge
        finally:
            await client.close()
            await asyncio.to_thread(edge.stop)
            await operator.stop()


async def _apply(client: AsyncClient, namespace: str, obj: dict[str, Any]) -> None:
    body = copy.deepcopy(obj)
    body["metadata"]["namespace"] = namespace
    resource: Any = ModelBackend
    await client.create(resource(body))


def _served(api: ApiServer, namespace: str, name: str) -> dict[str, Any]:
    found = api.find(BACKENDS, namespace, name) or {}
    conditions = (found.get("status") or {}).get("conditions") or ()
    return next((dict(c) for c in conditions if c["type"] == "Served"), {})


async def test_a_newcomer_in_another_namespace_does_not_take_the_traffic(
    operated_edge: tuple[ApiServer, AsyncClient, Edge], engines: dict[str, Stack]
) -> None:
    """Issue 10, end to end: the release's switchyard/demo-vllm serves; an hour later the
    example is applied in `models` (a namespace that sorts first). Traffic stays on the
    original, the edge logs the conflict once, and the newcomer's status says why."""
    api, client, edge = operated_edge
    openai_client = edge.client()
    demo = example("vllm-sim")
    await _apply(client, "switchyard", demo)
    await client.create(_slice(engines["vllm"].adapter.port, backend="demo-vllm",
                               namespace="switchyard"))  # fmt: skip
    ask = {"model": "demo-vllm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

    async def answers() -> bool:
        try:
            reply = await openai_client.chat.completions.create(**ask)  # type: ignore[call-overload]
        except (openai.NotFoundError, openai.InternalServerError):
            return False
        return bool(reply.choices[0].message.content)

    await eventually(answers, what="the model answers")

    api.clock_offset_s = 3600
    await _apply(client, NS, demo)
    # The newcomer's own replica: an address nothing listens on, so traffic sent there fails.
    await client.create(_slice(free_port(), backend="demo-vllm", namespace=NS,
                               name="demo-vllm-adapter-new"))  # fmt: skip

    async def edge_saw_it() -> bool:
        return "model_name_conflict" in edge.service.log_path.read_text(errors="replace")

    await eventually(edge_saw_it, what="the edge logs the conflict")
    for _ in range(5):
        reply = await openai_client.chat.completions.create(**ask)  # type: ignore[call-overload]
        assert reply.choices[0].message.content

    async def newcomer_told() -> bool:
        return _served(api, NS, "demo-vllm").get("reason") == "NameConflict"

    await eventually(newcomer_told, what="the newcomer's Served condition says NameConflict")
    condition = _served(api, NS, "demo-vllm")
    assert condition["status"] == "False"
    assert "served by ModelBackend switchyard/demo-vllm" in condition["message"]
    assert (api.find(BACKENDS, NS, "demo-vllm") or {})["status"]["phase"] == "NotServed"
    assert _served(api, "switchyard", "demo-vllm")["status"] == "True"
    log = edge.service.log_path.read_text(errors="replace")
    assert log.count("model_name_conflict") == 1
