"""Hold on wake, end to end: edge processes on the cluster routes source (kmock's API
server), a model at zero replicas (a ModelBackend with no ready EndpointSlice), and a real
adapter and simulator as the replica that turns up. Requests are held, not refused, and
served once the replica is ready; streams get keep-alive comments meanwhile; two edges
sharing a Redis send one wake signal for fifty held requests; a client that leaves frees
its place; the hold's bound and timeout answer 503 with Retry-After.

One cluster, one Redis and four edges serve the whole module (each test its own model):
`a1` and `a2` share the Redis; `one` holds at most one request per model; `brief` holds
for half a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anthropic
import httpx
import openai
import pytest
from lightkube.models.discovery_v1 import Endpoint, EndpointConditions, EndpointPort
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.discovery_v1 import EndpointSlice

from switchyard.edge.routing.kubernetes_source import BACKEND_LABEL, DEMAND_ANNOTATION, ModelBackend
from tests.support.edge import DEFAULT_KEYS, Edge, start_edge, write_keys
from tests.support.kube import MODEL_BACKENDS, Cluster, emulated_cluster
from tests.support.polling import TIMEOUT_S, eventually
from tests.support.redis import running_redis
from tests.support.stacks import Stack

NS = "models"
KEEPALIVE = b": keep-alive"
#: What the vllm simulator serves (and its adapter accepts): every backend's served name.
SERVED = "demo-vllm"
HELD = "switchyard_edge_held_requests"
HOLD_TIME = "switchyard_edge_hold_seconds_count"
WAKES = "switchyard_edge_wake_signals_total"


@dataclass
class World:
    cluster: Cluster
    a1: Edge
    a2: Edge
    one: Edge
    brief: Edge


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    log_dir = tmp_path_factory.mktemp("hold-on-wake")
    async with emulated_cluster(log_dir) as cluster:
        with running_redis(log_dir) as redis:
            base = {
                "EDGE_ROUTES_SOURCE": "kubernetes",
                "KUBECONFIG": str(cluster.kubeconfig),
                # One signal per backend and process for the whole module: any second
                # signal in a test comes from another edge, which the Redis must stop.
                "EDGE_DEMAND_INTERVAL_S": "3600",
                "EDGE_STREAM_KEEPALIVE_S": "0.1",
            }
            shared = {**base, "EDGE_RATE_LIMIT_BACKEND": "redis"}
            specs = {
                "a1": (shared, redis.url),
                "a2": (shared, redis.url),
                "one": ({**base, "EDGE_HOLD_MAX_PER_MODEL": "1"}, None),
                "brief": ({**base, "EDGE_HOLD_TIMEOUT_S": "0.5"}, None),
            }
            keyring = write_keys(log_dir, DEFAULT_KEYS)  # one keys file for the four
            started = await asyncio.gather(
                *(
                    asyncio.to_thread(
                        start_edge,
                        log_dir,
                        {},
                        env=env,
                        redis_url=url,
                        name=f"edge-{name}",
                        keyring=keyring,
                    )
                    for name, (env, url) in specs.items()
                ),
                return_exceptions=True,
            )
            edges = [e for e in started if isinstance(e, Edge)]
            try:
                failed = [e for e in started if isinstance(e, BaseException)]
                if failed:
                    raise failed[0]
                yield World(cluster, *edges)
            finally:
                await asyncio.gather(*(asyncio.to_thread(e.stop) for e in edges))


async def _metric(edge: Edge, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(
        value
        for (found, sample_labels), value in (await edge.metrics()).items()
        if found == name and wanted <= set(sample_labels)
    )


@contextlib.asynccontextmanager
async def _model_at_zero(world: World, name: str, *edges: Edge) -> AsyncIterator[str]:
    """A ModelBackend `name` with no ready replica, routed (waking) by `edges` under the
    alias `name`; yields the name its route (and its metrics) go by: the simulator's served
    name, which the adapter insists on. Removed at the end, with its replica, so that the
    next test's backend may claim that name."""
    client = world.cluster.client
    await client.create(
        ModelBackend(
            metadata=ObjectMeta(name=name, namespace=NS),
            spec={"engine": "vllm", "model": "m", "servedModelName": SERVED, "aliases": [name]},
        )
    )
    try:

        async def listed(edge: Edge) -> bool:
            async with httpx.AsyncClient() as http:
                response = await http.get(f"{edge.url}/v1/models", headers=edge.auth())
            return any(m["id"] == name for m in response.json()["data"])

        for edge in edges:
            await eventually(
                functools.partial(listed, edge), what=f"{edge.service.name} routes {name}"
            )
        yield SERVED
    finally:
        with contextlib.suppress(Exception):
            await client.delete(EndpointSlice, f"{name}-x1", namespace=NS)
        await client.delete(ModelBackend, name, namespace=NS)


async def _replica_ready(world: World, name: str, stack: Stack) -> None:
    """The replica turns up: a ready EndpointSlice for the backend, at a real adapter."""
    await world.cluster.client.create(
        EndpointSlice(
            metadata=ObjectMeta(name=f"{name}-x1", namespace=NS, labels={BACKEND_LABEL: name}),
            addressType="IPv4",
            endpoints=[
                Endpoint(addresses=["127.0.0.1"], conditions=EndpointConditions(ready=True))
            ],
            ports=[EndpointPort(name="grpc", port=stack.adapter.port)],
        )
    )


async def _held(edge: Edge, model: str, count: int) -> None:
    async def exactly() -> bool:
        return await _metric(edge, HELD, model=model) == count

    await eventually(exactly, what=f"{count} held for {model} on {edge.service.name}")


def _chat(model: str, **more: object) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        **more,
    }


@dataclass
class RawStream:
    status: int = 0
    chunks: list[bytes] | None = None

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks or [])


async def _raw_stream(http: httpx.AsyncClient, edge: Edge, model: str, into: RawStream) -> None:
    """A streamed chat read as the bytes on the wire (so SSE comments are seen)."""
    into.chunks = []
    body = _chat(model, stream=True)
    async with http.stream(
        "POST", f"{edge.url}/v1/chat/completions", json=body, headers=edge.auth()
    ) as response:
        into.status = response.status_code
        async for chunk in response.aiter_bytes():
            into.chunks.append(chunk)


async def test_held_requests_are_served_once_a_replica_is_ready(
    world: World, engines: dict[str, Stack]
) -> None:
    model = "hold-served"
    edge = world.a1
    async with _model_at_zero(world, model, edge) as served:
        served_before = await _metric(edge, HOLD_TIME, model=served, outcome="served")
        client = edge.client()
        async with httpx.AsyncClient(timeout=TIMEOUT_S * 2) as http:
            raw = RawStream()
            unary = asyncio.create_task(client.chat.completions.create(**_chat(model)))  # type: ignore[call-overload]

            async def sdk_stream() -> str:
                stream = await client.chat.completions.create(**_chat(model, stream=True))  # type: ignore[call-overload]
                text = [c.choices[0].delta.content async for c in stream if c.choices]
                return "".join(t for t in text if t)

            streamed = asyncio.create_task(sdk_stream())
            wire = asyncio.create_task(_raw_stream(http, edge, model, raw))
            try:
                await _held(edge, served, 3)
                # Held past the keep-alive interval: the stream is committed (200) and the
                # client receives comments while the model wakes.
                await eventually(
                    lambda: raw.status == 200 and KEEPALIVE in raw.body, what="a comment"
                )
                assert not unary.done()
                assert b"data:" not in raw.body

                def demanded() -> bool:
                    obj = world.cluster.emulator.objects[MODEL_BACKENDS, NS, model]
                    return DEMAND_ANNOTATION in (obj.get("metadata", {}).get("annotations") or {})

                await eventually(demanded, what="the wake signal")

                await _replica_ready(world, model, engines["vllm"])
                async with asyncio.timeout(TIMEOUT_S):
                    reply, text, _ = await asyncio.gather(unary, streamed, wire)
            finally:
                for task in (unary, streamed, wire):
                    task.cancel()
        assert reply.choices[0].message.content
        assert text
        body = raw.body
        assert body.index(KEEPALIVE) < body.index(b"data:")
        assert body.rstrip().endswith(b"data: [DONE]")
        assert await _metric(edge, HELD, model=served) == 0
        served_now = await _metric(edge, HOLD_TIME, model=served, outcome="served")
        assert served_now == served_before + 3


async def test_fifty_held_across_two_edges_make_one_wake_and_are_all_served(
    world: World, engines: dict[str, Stack]
) -> None:
    model = "hold-fifty"
    edges = (world.a1, world.a2)
    async with _model_at_zero(world, model, *edges) as served:

        async def total(name: str, **labels: str) -> float:
            return sum([await _metric(e, name, model=served, **labels) for e in edges])

        wakes_before = [await _metric(e, WAKES, model=served) for e in edges]
        served_before = await total(HOLD_TIME, outcome="served")
        clients = [e.client() for e in edges]
        tasks = [
            asyncio.create_task(clients[n % 2].chat.completions.create(**_chat(model)))  # type: ignore[call-overload]
            for n in range(50)
        ]
        try:

            async def all_held() -> bool:
                return await total(HELD) == 50

            await eventually(all_held, what="50 held across both edges")

            # Both edges asked; the one that lost the Redis key says so and sends nothing.
            def coalesced() -> bool:
                return any(
                    r.get("event") == "demand_coalesced" and model in str(r.get("backend"))
                    for e in edges
                    for r in e.records()
                )

            await eventually(coalesced, what="one edge's signal coalesced")
            sent = [
                await _metric(e, WAKES, model=served) - b
                for e, b in zip(edges, wakes_before, strict=True)
            ]
            assert sorted(sent) == [0, 1]

            await _replica_ready(world, model, engines["vllm"])
            async with asyncio.timeout(TIMEOUT_S * 2):
                replies = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        assert all(r.choices[0].message.content for r in replies)
        assert await total(WAKES) == sum(wakes_before) + 1
        assert await total(HOLD_TIME, outcome="served") == served_before + 50


async def test_a_held_client_that_leaves_frees_its_place(
    world: World, engines: dict[str, Stack]
) -> None:
    model = "hold-left"
    edge = world.one  # one held request per model at most
    async with _model_at_zero(world, model, edge) as served:
        client = edge.client()
        async with httpx.AsyncClient(timeout=TIMEOUT_S * 2) as http:
            leaving = asyncio.create_task(
                http.post(f"{edge.url}/v1/chat/completions", json=_chat(model), headers=edge.auth())
            )
            try:
                await _held(edge, served, 1)
                # The line is full: the next one is refused at once, with Retry-After.
                with pytest.raises(openai.APIStatusError) as refused:
                    await client.chat.completions.create(**_chat(model))  # type: ignore[call-overload]
                assert refused.value.status_code == 503
                assert int(refused.value.response.headers["retry-after"]) >= 1

                leaving.cancel()  # the client goes away: its connection closes
                with contextlib.suppress(asyncio.CancelledError):
                    await leaving

                async def left() -> bool:
                    return await _metric(edge, HOLD_TIME, model=served, outcome="left") == 1

                await eventually(left, what="the hold ended as left")
                assert await _metric(edge, HELD, model=served) == 0
            finally:
                leaving.cancel()
        # Its place is free: the next one is held, not refused, and served.
        staying = asyncio.create_task(client.chat.completions.create(**_chat(model)))  # type: ignore[call-overload]
        try:
            await _held(edge, served, 1)
            await _replica_ready(world, model, engines["vllm"])
            async with asyncio.timeout(TIMEOUT_S):
                reply = await staying
        finally:
            staying.cancel()
        assert reply.choices[0].message.content
        assert await _metric(edge, HOLD_TIME, model=served, outcome="full") == 1


async def test_the_hold_timeout_answers_503_or_ends_a_begun_stream(world: World) -> None:
    model = "hold-timeout"
    edge = world.brief  # holds for half a second
    async with _model_at_zero(world, model, edge) as served:
        client = edge.client()
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(**_chat(model))  # type: ignore[call-overload]
        assert refused.value.status_code == 503
        assert int(refused.value.response.headers["retry-after"]) >= 1
        assert await _metric(edge, HOLD_TIME, model=served, outcome="timeout") == 1

        # A stream held past its keep-alive interval began as a 200: the timeout is its
        # last event, an error in the API's own shape.
        raw = RawStream()
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
            await _raw_stream(http, edge, model, raw)
        assert raw.status == 200
        assert KEEPALIVE in raw.body
        assert b'"code":"service_unavailable"' in raw.body
        assert b"[DONE]" not in raw.body
        assert await _metric(edge, HELD, model=served) == 0


async def test_messages_are_held_and_a_token_count_is_not(
    world: World, engines: dict[str, Stack]
) -> None:
    model = "hold-messages"
    edge = world.a1
    async with _model_at_zero(world, model, edge) as served:
        sdk = anthropic.AsyncAnthropic(base_url=edge.url, api_key=edge.keys["full"], max_retries=0)
        hello: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Hello"}]
        message = asyncio.create_task(
            sdk.messages.create(model=model, messages=hello, max_tokens=3)
        )
        try:
            await _held(edge, served, 1)
            # A count is not worth a wake: 503 at once, with Retry-After, while the
            # message waits.
            with pytest.raises(anthropic.APIStatusError) as refused:
                await sdk.messages.count_tokens(model=model, messages=hello)
            assert refused.value.status_code == 503
            assert int(refused.value.response.headers["retry-after"]) >= 1
            assert not message.done()

            await _replica_ready(world, model, engines["vllm"])
            async with asyncio.timeout(TIMEOUT_S):
                reply = await message
        finally:
            message.cancel()
        assert reply.content
        assert reply.usage.output_tokens > 0
