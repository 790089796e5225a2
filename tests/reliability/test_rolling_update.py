"""A rolling update of a ModelBackend under 50 open streams breaks none of them (issue 15).

An edge on the Kubernetes routes source (kmock's API emulator) serves a model from two
"old" replicas (simulator + adapter processes, each in its own EndpointSlice) holding 50
open streams. The update goes as a Deployment's does: two new replicas start and join,
then each old one in turn gets SIGTERM and is marked not ready, drains and exits. The
simulators' stall fault holds the streams open until a replica drains, so they are in
flight at its SIGTERM however slow the machine. Every stream ends with its finish reason
and every token; requests sent during the update all succeed; none goes to a replica after
the edge saw it NOT_SERVING; no generation is aborted anywhere.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from lightkube.models.discovery_v1 import Endpoint, EndpointConditions, EndpointPort
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from switchyard.edge.routing.kubernetes_source import BACKEND_LABEL, ModelBackend
from tests.support.edge import Edge, start_edge
from tests.support.kube import Cluster, emulated_cluster
from tests.support.polling import eventually
from tests.support.stacks import Stack, start_stack

NS = "models"
BACKEND = "demo"
MODEL = "demo-vllm"
STREAMS = 50
TOKENS = 32
#: New requests sent while each old replica drains.
DURING = 10
#: Long enough that nothing in these tests waits it out: the streams decide when it ends.
GRACE_S = "120"


@dataclass
class Replica:
    name: str
    stack: Stack

    @property
    def slice_name(self) -> str:
        return f"{BACKEND}-adapter-{self.name}"

    @property
    def endpoint(self) -> str:
        return self.stack.address


def endpoint_slice(replica: Replica) -> EndpointSlice:
    return EndpointSlice(
        metadata=ObjectMeta(name=replica.slice_name, namespace=NS, labels={BACKEND_LABEL: BACKEND}),
        addressType="IPv4",
        endpoints=[Endpoint(addresses=["127.0.0.1"], conditions=EndpointConditions(ready=True))],
        ports=[EndpointPort(name="grpc", port=replica.stack.adapter.port)],
    )


async def start_replicas(
    cluster: Cluster, log_dir: Path, started: list[Replica], *names: str
) -> list[Replica]:
    """Replicas started side by side, as a Deployment's pods: the processes, then each one's
    EndpointSlice (ready: it passed readiness). Each is added to `started` as soon as it
    runs, so that it is stopped whatever happens next."""
    env = {"ADAPTER_DRAIN_DELAY_S": "1", "ADAPTER_SHUTDOWN_GRACE_S": GRACE_S}

    async def one(name: str) -> Replica:
        stack = await asyncio.to_thread(
            start_stack, "vllm", log_dir, name=f"-{name}", adapter_env=env
        )
        replica = Replica(name, stack)
        started.append(replica)
        await cluster.client.create(endpoint_slice(replica))
        return replica

    results = await asyncio.gather(*(one(name) for name in names), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, Replica)]


async def terminating(cluster: Cluster, replica: Replica) -> None:
    """What Kubernetes does to a deleted pod's endpoint: not ready, serving, terminating."""
    conditions = {"ready": False, "serving": True, "terminating": True}
    patch = {"endpoints": [{"addresses": ["127.0.0.1"], "conditions": conditions}]}
    await cluster.client.patch(
        EndpointSlice, replica.slice_name, patch, namespace=NS, patch_type=PatchType.MERGE
    )


async def sim(http: httpx.AsyncClient, replica: Replica, method: str, path: str) -> Any:
    response = await http.request(method, f"{replica.stack.sim_url}{path}")
    response.raise_for_status()
    return response.json()


async def requests_seen(http: httpx.AsyncClient, replica: Replica) -> int:
    """Requests the replica's engine has received since it started."""
    return int((await sim(http, replica, "GET", "/sim/stats"))["requests"])


async def hold(http: httpx.AsyncClient, replica: Replica) -> None:
    """Every request on this replica stops after its first token until `release`."""
    fault = {"stall_after": 1}
    (await http.post(f"{replica.stack.sim_url}/sim/faults", json=fault)).raise_for_status()


async def release(http: httpx.AsyncClient, replica: Replica) -> None:
    await sim(http, replica, "DELETE", "/sim/faults")


async def edge_logs(edge: Edge, event: str, replica: Replica) -> None:
    """Until the edge has logged `event` for the replica's endpoint."""

    def logged() -> bool:
        return any(
            r.get("event") == event and r.get("endpoint") == replica.endpoint
            for r in edge.records()
        )

    await eventually(logged, what=f"the edge logging {event} for {replica.name}")


async def stream(client: openai.AsyncOpenAI) -> tuple[str | None, int | None, str]:
    """One streamed chat completion read to its end: (finish reason, completion tokens, text)."""
    chunks = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "tell me everything"}],
        max_tokens=TOKENS,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    finish: str | None = None
    tokens: int | None = None
    text = ""
    async for chunk in chunks:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return finish, tokens, text


async def unary(client: openai.AsyncOpenAI) -> tuple[str | None, int | None, str]:
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "and briefly?"}],
        max_tokens=TOKENS,
        extra_body={"ignore_eos": True},
    )
    usage = reply.usage.completion_tokens if reply.usage else None
    return reply.choices[0].finish_reason, usage, reply.choices[0].message.content or ""


@pytest.fixture
async def cluster_edge(tmp_path: Path) -> AsyncIterator[tuple[Cluster, Edge]]:
    async with emulated_cluster(tmp_path) as cluster:
        env = {
            "EDGE_ROUTES_SOURCE": "kubernetes",
            "KUBECONFIG": str(cluster.kubeconfig),
            # The edge drops a terminating endpoint at once and closes its connection with
            # this grace for the calls on it: at least the adapters' drain.
            "EDGE_ENDPOINT_CLOSE_GRACE_S": GRACE_S,
        }
        edge = await asyncio.to_thread(start_edge, tmp_path, {}, env=env)
        try:
            await cluster.client.create(
                ModelBackend(
                    metadata=ObjectMeta(name=BACKEND, namespace=NS),
                    spec={"engine": "vllm", "model": "m", "servedModelName": MODEL},
                )
            )
            yield cluster, edge
        finally:
            await asyncio.to_thread(edge.stop)


async def test_a_rolling_update_under_50_open_streams_breaks_none(
    cluster_edge: tuple[Cluster, Edge], tmp_path: Path
) -> None:
    cluster, edge = cluster_edge
    client = edge.client()
    replicas: list[Replica] = []
    streams: list[asyncio.Task[tuple[str | None, int | None, str]]] = []
    during: list[asyncio.Task[tuple[str | None, int | None, str]]] = []
    async with httpx.AsyncClient(timeout=30) as http:
        try:
            old = await start_replicas(cluster, tmp_path, replicas, "old1", "old2")
            for replica in old:
                await edge_logs(edge, "endpoint_serving", replica)

            # 50 streams open on the old replicas, each held after its first token.
            for replica in old:
                await hold(http, replica)
            streams += [asyncio.create_task(stream(client)) for _ in range(STREAMS)]

            async def held() -> list[int] | None:
                counts = [(await sim(http, r, "GET", "/sim/faults"))["stalled"] for r in old]
                return counts if sum(counts) == STREAMS else None

            per_old = await eventually(held, what=f"{STREAMS} streams open")
            assert all(per_old), f"both old replicas hold streams: {per_old}"

            # The new replicas start and join (maxSurge), then each old one goes.
            new = await start_replicas(cluster, tmp_path, replicas, "new1", "new2")
            for replica in new:
                await edge_logs(edge, "endpoint_serving", replica)

            for leaving in old:
                others = [r for r in replicas if r is not leaving and r.stack.adapter.alive()]
                leaving.stack.adapter.process.send_signal(signal.SIGTERM)
                # Its adapter says NOT_SERVING on the health watch: the edge stops picking it.
                await edge_logs(edge, "endpoint_not_serving", leaving)
                seen = await requests_seen(http, leaving)
                before = sum([await requests_seen(http, r) for r in others])
                during.extend(
                    asyncio.create_task((stream if i % 2 else unary)(client)) for i in range(DURING)
                )

                async def dispatched(before: int = before, others: list[Replica] = others) -> bool:
                    after = sum([await requests_seen(http, r) for r in others])
                    return after - before == DURING

                await eventually(dispatched, what="the new requests reaching the other replicas")
                assert await requests_seen(http, leaving) == seen

                # Kubernetes marks the endpoint terminating (asynchronously, in a cluster).
                await terminating(cluster, leaving)
                # Its streams go on to their end, then the adapter exits by itself.
                await release(http, leaving)

                async def exited(r: Replica = leaving) -> bool:
                    return not r.stack.adapter.alive()

                await eventually(exited, what=f"{leaving.name}'s adapter exiting once drained")
                assert leaving.stack.adapter.process.returncode == 0
                await cluster.client.delete(EndpointSlice, leaving.slice_name, namespace=NS)

            async with asyncio.timeout(120):
                results = await asyncio.gather(*streams, *during, return_exceptions=True)
            broken = [r for r in results if isinstance(r, BaseException)]
            assert not broken, f"{len(broken)} broken of {len(results)}: {broken[:3]}"
            answers = [r for r in results if not isinstance(r, BaseException)]
            # Every one whole: its finish reason, every token (the usage), some text.
            assert [(finish, tokens) for finish, tokens, _ in answers] == [
                ("length", TOKENS)
            ] * len(answers)
            assert all(text for _, _, text in answers)
            for replica in replicas:
                stats = await sim(http, replica, "GET", "/sim/stats")
                assert stats["aborted"] == stats["failed"] == 0, (replica.name, stats)
        finally:
            for task in (*streams, *during):
                task.cancel()
            await asyncio.gather(*streams, *during, return_exceptions=True)
            await asyncio.gather(*(asyncio.to_thread(r.stack.stop) for r in replicas))
