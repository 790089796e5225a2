"""InferenceError survives a real gRPC hop: code, message, reason and metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from switchyard.inference.errors import InferenceError, from_rpc_error
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.support.processes import free_port


class _Failing(pb_grpc.InferenceServiceServicer):
    def __init__(self, error: InferenceError | None) -> None:
        self.error = error

    async def Generate(self, request: pb.GenerateRequest, context: Any) -> pb.GenerateResponse:
        if self.error is None:
            await context.abort(grpc.StatusCode.INTERNAL, "plain failure")
        else:
            await context.abort_with_status(self.error.to_status())
        raise AssertionError("unreachable")


@pytest.fixture
async def server_for() -> AsyncIterator[Any]:
    servers: list[grpc.aio.Server] = []

    async def make(error: InferenceError | None) -> pb_grpc.InferenceServiceStub:
        server = grpc.aio.server()
        # Only Generate is needed here; the other methods stay abstract.
        pb_grpc.add_InferenceServiceServicer_to_server(_Failing(error), server)  # type: ignore[abstract]
        port = free_port()
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        servers.append(server)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        return pb_grpc.InferenceServiceStub(channel)

    yield make
    for server in servers:
        await server.stop(None)


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (
            InferenceError.context_length("too long"),
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.CONTEXT_LENGTH_EXCEEDED,
        ),
        (
            InferenceError.overloaded("busy"),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            pb.ENGINE_OVERLOADED,
        ),
        (InferenceError.unavailable("down"), grpc.StatusCode.UNAVAILABLE, pb.ENGINE_UNAVAILABLE),
        (
            InferenceError.invalid("bad", "top_p"),
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.INVALID_REQUEST,
        ),
        (InferenceError.model_not_found("m"), grpc.StatusCode.NOT_FOUND, pb.MODEL_NOT_FOUND),
    ],
)
async def test_reason_and_metadata_cross_the_wire(
    server_for: Any, error: InferenceError, code: grpc.StatusCode, reason: int
) -> None:
    stub = await server_for(error)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(pb.GenerateRequest(model="m", prompt="x"))
    received = from_rpc_error(caught.value)
    assert received.code == code
    assert received.reason == reason
    assert received.message == error.message
    assert received.metadata == error.metadata


async def test_plain_status_has_unspecified_reason(server_for: Any) -> None:
    stub = await server_for(None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(pb.GenerateRequest(model="m", prompt="x"))
    received = from_rpc_error(caught.value)
    assert received.code == grpc.StatusCode.INTERNAL
    assert received.reason == pb.ERROR_REASON_UNSPECIFIED
    assert received.message == "plain failure"


def test_param_is_carried_as_metadata() -> None:
    assert InferenceError.invalid("bad", "max_tokens").metadata == {"param": "max_tokens"}
    assert InferenceError.invalid("bad").metadata == {}
    assert InferenceError.unsupported("no").reason_name == "UNSUPPORTED_CONSTRAINT"
