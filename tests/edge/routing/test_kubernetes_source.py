"""The cluster routes source against kmock's Kubernetes emulator, over real HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from lightkube.models.discovery_v1 import Endpoint, EndpointConditions, EndpointPort
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType
from structlog.testing import capture_logs

from switchyard.edge.routing.kubernetes_source import (
    BACKEND_LABEL,
    DEMAND_ANNOTATION,
    KubernetesRoutes,
    ModelBackend,
)
from switchyard.edge.routing.table import Route, RouteTable
from tests.support.kube import MODEL_BACKENDS, Cluster, emulated_cluster
from tests.support.polling import TIMEOUT_S, NotYet, eventually

NS = "models"


T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def backend(
    name: str,
    engine: str = "vllm",
    *,
    namespace: str = NS,
    created: dt.datetime | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> Any:
    """A ModelBackend as the API server keeps it (the emulator stores the creation time and
    status it is given; a real server sets both itself)."""
    meta = ObjectMeta(name=name, namespace=namespace, creationTimestamp=created)
    spec = {"engine": engine, "model": "m", **spec}
    if status is None:
        return ModelBackend(metadata=meta, spec=spec)
    return ModelBackend(metadata=meta, spec=spec, status=status)


def endpoint_slice(
    name: str, owner: str, ready: dict[str, bool], port: int = 50051, namespace: str = NS
) -> EndpointSlice:
    return EndpointSlice(
        metadata=ObjectMeta(name=name, namespace=namespace, labels={BACKEND_LABEL: owner}),
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
    # An hour between two stamps of one backend: a second demand in a test is always inside
    # the interval, however slow the machine.
    source = KubernetesRoutes(
        cluster.client, lambda table: None, namespace=None, demand_interval_s=3600
    )
    task = asyncio.create_task(source.run())
    await asyncio.wait_for(source.synced.wait(), TIMEOUT_S)
    yield source
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def table_matches(check: Callable[[RouteTable], bool], source: KubernetesRoutes) -> None:
    try:
        await eventually(lambda: check(source.table), what="the route table to match")
    except NotYet as exc:
        raise NotYet(f"{exc}: {source.table.routes}") from None


def route(table: RouteTable, name: str) -> Route | None:
    return table.resolve(name)


def endpoints_of(table: RouteTable, name: str) -> tuple[str, ...]:
    found = table.resolve(name)
    return found.endpoints if found is not None else ()


async def test_a_backend_and_its_ready_endpoints_become_a_route(
    cluster: Cluster, routes: KubernetesRoutes
) -> None:
    await cluster.client.create(backend("llama", servedModelName="llama-3.1-8b", aliases=["llama"]))
    await table_matches(lambda t: (r := route(t, "llama")) is not None and r.waking, routes)
    found = route(routes.table, "llama")
    assert found is not None
    assert (found.name, found.engine, found.endpoints) == ("llama-3.1-8b", "vllm", ())

    await cluster.client.create(
        endpoint_slice("llama-adapter-abc", "llama", {"10.0.0.1": True, "10.0.0.2": False})
    )
    await table_matches(
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
    await table_matches(
        lambda t: (
            (r := route(t, "llama")) is not None
            and set(r.endpoints) == {"10.0.0.1:50051", "10.0.0.2:50051", "[fd00::7]:50051"}
        ),
        routes,
    )

    # Scaled to zero: no slice left, the route stays but is waking.
    await cluster.client.delete(EndpointSlice, "llama-adapter-abc", namespace=NS)
    await cluster.client.delete(EndpointSlice, "llama-adapter-def", namespace=NS)
    await table_matches(lambda t: (r := route(t, "llama")) is not None and r.waking, routes)

    await cluster.client.delete(ModelBackend, "llama", namespace=NS)
    await table_matches(lambda t: route(t, "llama") is None and len(t) == 0, routes)


async def test_served_name_defaults_to_the_object_name_and_bad_engines_are_skipped(
    cluster: Cluster, routes: KubernetesRoutes
) -> None:
    await cluster.client.create(backend("plain", engine="sglang"))
    await cluster.client.create(backend("weird", engine="ollama"))
    await table_matches(lambda t: route(t, "plain") is not None, routes)
    assert route(routes.table, "weird") is None


async def until_logged(logs: Sequence[Mapping[str, Any]], event: str) -> None:
    try:
        await eventually(lambda: any(e["event"] == event for e in logs), what=f"{event} logged")
    except NotYet as exc:
        raise NotYet(f"{exc}: {[e['event'] for e in logs]}") from None


async def test_a_newer_backend_in_another_namespace_does_not_take_a_name_over(
    cluster: Cluster, routes: KubernetesRoutes
) -> None:
    """Issue 10: `models/demo-vllm` (applied later) took all traffic of the release's
    `switchyard/demo-vllm` because "models" sorts first. The first claimant keeps the name;
    the conflict is logged once, however often routes are published, and once resolved."""
    original = backend("demo-vllm", namespace="switchyard", created=T0)
    await cluster.client.create(original)
    await cluster.client.create(
        endpoint_slice(
            "demo-vllm-adapter-a", "demo-vllm", {"10.0.0.1": True}, namespace="switchyard"
        )
    )
    await table_matches(
        lambda t: (r := route(t, "demo-vllm")) is not None and r.endpoints == ("10.0.0.1:50051",),
        routes,
    )
    with capture_logs() as logs:
        await cluster.client.create(
            backend("demo-vllm", namespace="models", created=T0 + dt.timedelta(hours=1))
        )
        await cluster.client.create(
            endpoint_slice(
                "demo-vllm-adapter-b", "demo-vllm", {"10.9.9.9": True}, namespace="models"
            )
        )
        await until_logged(logs, "model_name_conflict")
        # More publishes (each slice event is one, and the slices are seen in order, so
        # these come after demo-vllm-adapter-b): the conflict is not logged again.
        await cluster.client.create(backend("other", created=T0))
        for n in range(5):
            await cluster.client.create(
                endpoint_slice(f"other-{n}", "other", {f"10.1.0.{n}": True})
            )
        await table_matches(lambda t: len(endpoints_of(t, "other")) == 5, routes)
        found = route(routes.table, "demo-vllm")
        assert found is not None
        assert found.endpoints == ("10.0.0.1:50051",)  # ...and traffic stays on the original
        conflicts = [e for e in logs if e["event"] == "model_name_conflict"]
        assert conflicts == [
            {
                "event": "model_name_conflict",
                "log_level": "warning",
                "backend": "models/demo-vllm",
                "name": "demo-vllm",
                "served_by": "switchyard/demo-vllm",
            }
        ]

        # The owner goes: the next claimant in line gets the name.
        await cluster.client.delete(ModelBackend, "demo-vllm", namespace="switchyard")
        await table_matches(
            lambda t: (
                (r := route(t, "demo-vllm")) is not None and r.endpoints == ("10.9.9.9:50051",)
            ),
            routes,
        )
        resolved = [e for e in logs if e["event"] == "model_name_conflict_resolved"]
        assert [e["backend"] for e in resolved] == ["models/demo-vllm"]


async def test_an_alias_claimed_later_loses_the_whole_backend(
    cluster: Cluster, routes: KubernetesRoutes
) -> None:
    with capture_logs() as logs:
        await cluster.client.create(backend("b", created=T0, aliases=["shared"]))
        later = T0 + dt.timedelta(seconds=1)
        await cluster.client.create(backend("a", engine="tgi", created=later,
                                            aliases=["shared", "mine"]))  # fmt: skip
        await until_logged(logs, "model_name_conflict")
        await cluster.client.create(backend("c", created=T0 + dt.timedelta(seconds=2)))
        await table_matches(lambda t: route(t, "c") is not None, routes)
    shared = route(routes.table, "shared")
    assert shared is not None
    assert shared.name == "b"
    assert route(routes.table, "a") is None
    assert route(routes.table, "mine") is None
    assert [e["backend"] for e in logs if e["event"] == "model_name_conflict"] == ["models/a"]


async def test_equal_creation_times_go_by_namespace_then_name(
    cluster: Cluster, routes: KubernetesRoutes
) -> None:
    await cluster.client.create(backend("b", created=T0, servedModelName="m"))
    await cluster.client.create(backend("a", created=T0, engine="tgi", servedModelName="m"))
    await cluster.client.create(backend("z", created=T0, namespace="a-ns", engine="sglang",
                                        servedModelName="m"))  # fmt: skip
    await table_matches(lambda t: (r := route(t, "m")) is not None and r.engine == "sglang", routes)


async def test_a_served_name_repeated_in_the_aliases_is_one_name(
    cluster: Cluster, routes: KubernetesRoutes
) -> None:
    await cluster.client.create(backend("llama", aliases=["llama", "l", "l"]))
    await table_matches(
        lambda t: (r := route(t, "llama")) is not None and r.aliases == ("l",), routes
    )


async def test_a_namespaced_source_serves_names_only_from_its_namespace(
    cluster: Cluster,
) -> None:
    """EDGE_KUBERNETES_NAMESPACE: the older claimant in team-b is not even seen."""
    source = KubernetesRoutes(cluster.client, lambda table: None, namespace=NS)
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(source.synced.wait(), TIMEOUT_S)
        await cluster.client.create(backend("outside", namespace="team-b", created=T0))
        later = T0 + dt.timedelta(seconds=1)
        await cluster.client.create(backend("inside", "tgi", created=later,
                                            servedModelName="outside"))  # fmt: skip
        await table_matches(lambda t: (r := route(t, "outside")) is not None and r.engine == "tgi",
                         source)  # fmt: skip
        assert len(source.table) == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_route_carries_the_operators_wake_measure(
    cluster: Cluster, routes: KubernetesRoutes
) -> None:
    await cluster.client.create(
        backend(
            "sleepy",
            created=T0,
            status={"lastWakeSeconds": 12, "wakingSince": "2026-12-01T12:00:05Z"},
        )
    )
    await table_matches(lambda t: route(t, "sleepy") is not None, routes)
    found = route(routes.table, "sleepy")
    assert found is not None
    assert found.waking
    assert (found.last_wake_s, found.waking_since) == (
        12,
        (T0 + dt.timedelta(seconds=5)).timestamp(),
    )
    assert found.wake_retry_after_s(10, now=(T0 + dt.timedelta(seconds=9)).timestamp()) == 8


async def test_demand_stamps_the_backend_at_most_once_per_interval(
    cluster: Cluster, routes: KubernetesRoutes
) -> None:
    await cluster.client.create(backend("sleepy", minReplicas=0))
    await table_matches(lambda t: route(t, "sleepy") is not None, routes)
    waking = route(routes.table, "sleepy")
    assert waking is not None
    routes.demand(waking)
    routes.demand(waking)  # within the interval: ignored

    def annotations() -> dict[str, str]:
        obj = cluster.emulator.objects[MODEL_BACKENDS, NS, "sleepy"]
        found: dict[str, str] = obj.get("metadata", {}).get("annotations") or {}
        return found

    await eventually(lambda: DEMAND_ANNOTATION in annotations(), what="the demand stamp")
    assert annotations()[DEMAND_ANNOTATION].endswith("Z")
    assert len(cluster.emulator["patch"]) == 1
