"""A route's routing policy, as the routes file and the cluster's ModelBackends give it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.types import PatchType

from switchyard.edge.routing.file_source import RoutesFileError, load_routes
from switchyard.edge.routing.kubernetes_source import KubernetesRoutes, ModelBackend, backend_of
from switchyard.edge.routing.table import Route, RouteTable
from tests.support.kube import Cluster, emulated_cluster
from tests.support.polling import TIMEOUT_S, eventually

NS = "models"


def test_the_routes_file_names_a_policy_per_model(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        "models:\n"
        "  - {name: a, engine: vllm, endpoints: ['h:1'], routing: {policy: prefix}}\n"
        "  - {name: b, engine: sglang, endpoints: ['h:2'], routing: {policy: session}}\n"
        "  - {name: c, engine: tgi, endpoints: ['h:3']}\n"
    )
    table = load_routes(path)
    policies = {r.name: r.policy for r in table.routes}
    assert policies == {"a": "prefix", "b": "session", "c": "load"}


def test_a_changed_policy_is_a_changed_table() -> None:
    """The file source reloads (and the pool re-reads) a table whose policy changed."""
    assert RouteTable([Route("a", "vllm", ("h:1",))]) != RouteTable(
        [Route("a", "vllm", ("h:1",), policy="prefix")]
    )


@pytest.mark.parametrize("routing", ["{policy: nearest}", "{policy: prefix, extra: 1}", "prefix"])
def test_an_unknown_policy_is_refused(tmp_path: Path, routing: str) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(f"models: [{{name: a, engine: vllm, endpoints: ['h:1'], routing: {routing}}}]")
    with pytest.raises(RoutesFileError, match=r"routing"):
        load_routes(path)


def _raw(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "llama"}, "spec": {"engine": "vllm", "model": "m", **spec}}


def test_a_backend_carries_its_policy_and_an_unknown_one_routes_by_load() -> None:
    def policy(spec: dict[str, Any]) -> str:
        claim = backend_of(_raw(spec))
        assert claim is not None
        return claim.policy

    assert policy({"routing": {"policy": "prefix"}}) == "prefix"
    assert policy({"routing": {"policy": "session"}}) == "session"
    assert policy({}) == "load"
    assert policy({"routing": {}}) == "load"
    assert policy({"routing": {"policy": "from-a-newer-operator"}}) == "load"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with emulated_cluster(tmp_path) as c:
        yield c


async def test_the_cluster_source_follows_a_backends_policy(cluster: Cluster) -> None:
    source = KubernetesRoutes(cluster.client, lambda table: None, demand_interval_s=3600)
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(source.synced.wait(), TIMEOUT_S)
        meta = ObjectMeta(name="llama", namespace=NS)
        spec = {"engine": "vllm", "model": "m", "routing": {"policy": "prefix"}}
        await cluster.client.create(ModelBackend(metadata=meta, spec=spec))

        def policy() -> str | None:
            found = source.table.resolve("llama")
            return found.policy if found is not None else None

        await eventually(lambda: policy() == "prefix", what="the prefix policy")
        await cluster.client.patch(
            ModelBackend,
            "llama",
            {"spec": {"routing": {"policy": "session"}}},
            namespace=NS,
            patch_type=PatchType.MERGE,
        )
        await eventually(lambda: policy() == "session", what="the session policy")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
