"""What a route's endpoints serve (chat, completions, embeddings) and the weights they serve,
as their adapters' ListModels says, against real gRPC servers in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from switchyard.edge.routing.endpoints import GENERATION, SERVICE_NAME, EndpointPool
from switchyard.edge.routing.table import Route, RouteTable
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.support.polling import eventually

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
Context = grpc.aio.ServicerContext[object, object]


class Adapter(pb_grpc.InferenceServiceServicer):
    """An adapter as the edge describes it: its health and its ListModels."""

    def __init__(self, info: pb.ModelInfo) -> None:
        self.info = info
        self.health = health_aio.HealthServicer()
        self.server = grpc.aio.server()
        self.address = ""

    async def start(self) -> None:
        pb_grpc.add_InferenceServiceServicer_to_server(self, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        await self.health.set(SERVICE_NAME, SERVING)
        await self.server.start()

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[self.info])

    # Not called by the pool.
    async def Generate(self, request: pb.GenerateRequest, context: Context) -> pb.GenerateResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served by this fake")

    async def GenerateStream(
        self, request: pb.GenerateRequest, context: Context
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served by this fake")
        yield pb.GenerateStreamResponse()  # never reached: abort raises

    async def CountTokens(self, request: pb.GenerateRequest, context: Context) -> pb.TokenCount:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served by this fake")

    async def GetLoad(self, request: pb.GetLoadRequest, context: Context) -> pb.LoadReport:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served by this fake")

    async def Embed(self, request: pb.EmbedRequest, context: Context) -> pb.EmbedResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served by this fake")


def _info(capabilities: list[pb.Capability.ValueType], identity: str) -> pb.ModelInfo:
    return pb.ModelInfo(
        id="m", engine="vllm", max_model_len=512, capabilities=capabilities, identity=identity
    )


EMBEDDINGS = [pb.CAPABILITY_EMBEDDINGS]
CHAT = [pb.CAPABILITY_CHAT, pb.CAPABILITY_COMPLETIONS]


@pytest.fixture
async def pool() -> AsyncIterator[EndpointPool]:
    pool = EndpointPool()
    yield pool
    await pool.aclose()


@pytest.fixture
async def started() -> AsyncIterator[list[Adapter]]:
    adapters: list[Adapter] = []
    yield adapters
    for adapter in adapters:
        await adapter.server.stop(0)


async def _serving(
    pool: EndpointPool, started: list[Adapter], *infos: pb.ModelInfo
) -> tuple[Route, list[Adapter]]:
    """A route over adapters answering `infos`, once all of them are serving."""
    adapters = [Adapter(info) for info in infos]
    for adapter in adapters:
        await adapter.start()
        started.append(adapter)
    route = Route("m", "vllm", tuple(a.address for a in adapters))
    pool.sync(RouteTable([route]))
    await eventually(lambda: len(pool.healthy(route)) == len(adapters), what="all serving")
    return route, adapters


async def test_an_embedding_model_is_known_by_its_capabilities_and_identity(
    pool: EndpointPool, started: list[Adapter]
) -> None:
    route, _ = await _serving(pool, started, _info(EMBEDDINGS, "vllm:BAAI/bge-small"))
    assert pool.capabilities(route) == frozenset({pb.CAPABILITY_EMBEDDINGS})
    assert pool.identity(route) == "vllm:BAAI/bge-small"
    assert pool.max_model_len(route) == 512


async def test_an_adapter_that_lists_no_capabilities_serves_generation(
    pool: EndpointPool, started: list[Adapter]
) -> None:
    route, _ = await _serving(pool, started, _info([], ""))
    assert pool.capabilities(route) == GENERATION
    assert pool.identity(route) is None  # unknown weights: nothing may be cached


async def test_endpoints_that_differ_serve_only_what_all_serve_under_no_identity(
    pool: EndpointPool, started: list[Adapter]
) -> None:
    route, _ = await _serving(
        pool, started, _info(CHAT, "sglang:a"), _info([pb.CAPABILITY_CHAT], "sglang:b")
    )
    assert pool.capabilities(route) == frozenset({pb.CAPABILITY_CHAT})
    assert pool.identity(route) is None  # a rollout under way: no cache for it


async def test_endpoints_sharing_no_capability_serve_nothing_rather_than_anything(
    pool: EndpointPool, started: list[Adapter]
) -> None:
    # A chat model and an embedding model under one name: known to serve nothing in
    # common, which is not the same as not knowing yet (None).
    route, _ = await _serving(pool, started, _info(CHAT, "vllm:a"), _info(EMBEDDINGS, "vllm:b"))
    assert pool.capabilities(route) == frozenset()


async def test_capabilities_are_unknown_until_an_endpoint_serves(pool: EndpointPool) -> None:
    route = Route("m", "vllm", ("127.0.0.1:1",))
    pool.sync(RouteTable([route]))
    assert pool.capabilities(route) is None


async def test_an_adapter_back_in_service_is_described_again(
    pool: EndpointPool, started: list[Adapter]
) -> None:
    route, (adapter,) = await _serving(pool, started, _info(CHAT, "vllm:old"))
    assert pool.identity(route) == "vllm:old"
    await adapter.health.set(SERVICE_NAME, NOT_SERVING)
    await eventually(lambda: not pool.healthy(route), what="not serving")
    adapter.info = _info(EMBEDDINGS, "vllm:new")  # restarted with other weights
    await adapter.health.set(SERVICE_NAME, SERVING)
    await eventually(lambda: pool.identity(route) == "vllm:new", what="described again")
    assert pool.capabilities(route) == frozenset({pb.CAPABILITY_EMBEDDINGS})
