"""Bad requests get INVALID_ARGUMENT with a clear message; the adapter keeps serving, nothing leaks."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest

from switchyard.inference.errors import InferenceError, from_rpc_error
from switchyard.inference.v1 import inference_pb2 as pb
from tests.contract.conftest import sim_stats
from tests.contract.test_generation import chat_request, prompt_request
from tests.support.polling import eventually
from tests.support.processes import SERVING, health_status
from tests.support.stacks import Stack

if TYPE_CHECKING:
    from tests.contract.conftest import Stub


async def _failure(stub: Stub, request: pb.GenerateRequest, streamed: bool) -> InferenceError:
    try:
        if streamed:
            async for _ in stub.GenerateStream(request):
                pass
        else:
            await stub.Generate(request)
    except grpc.aio.AioRpcError as error:
        return from_rpc_error(error)
    raise AssertionError("the request succeeded")


def _bad_requests(stack: Stack) -> dict[str, tuple[pb.GenerateRequest, str]]:
    no_model = prompt_request(stack)
    no_model.model = ""
    bad_schema = prompt_request(stack)
    bad_schema.structured_output.json_schema = (
        '{"type": "object", "properties": {"a": {"type": 7}}}'
    )
    unknown_kind = prompt_request(stack)
    # A StructuredOutput holding only field 99: a constraint kind from a newer contract.
    unknown_kind.structured_output.MergeFromString(bytes([0x9A, 0x06, 0x01, 0x41]))
    return {
        "missing model": (no_model, "model is required"),
        "negative max_tokens": (
            prompt_request(stack, max_tokens=-5),
            "max_tokens must be at least 1",
        ),
        "negative temperature": (chat_request(stack, temperature=-1.0), "temperature"),
        "top_p above one": (prompt_request(stack, top_p=1.5), "top_p"),
        "invalid JSON schema": (bad_schema, "not a valid JSON Schema"),
        "unknown constraint kind": (unknown_kind, "no constraint kind"),
    }


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_bad_parameters_are_invalid_argument(
    stack: Stack, stub: Stub, streamed: bool
) -> None:
    for name, (request, fragment) in _bad_requests(stack).items():
        error = await _failure(stub, request, streamed)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, name
        assert fragment in error.message, (name, error.message)
    # Still serving, and a good request still works.
    assert health_status(stack.address) == SERVING
    assert (await stub.Generate(prompt_request(stack, max_tokens=4))).text


async def test_unknown_model_is_not_found(stack: Stack, stub: Stub) -> None:
    request = prompt_request(stack)
    request.model = "someone-else"
    error = await _failure(stub, request, streamed=False)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == pb.MODEL_NOT_FOUND


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_context_overflow_is_invalid_argument_with_its_reason(
    stack: Stack, stub: Stub, streamed: bool
) -> None:
    request = prompt_request(stack, max_tokens=16)
    request.prompt = " ".join(["switchyard"] * (stack.options.max_model_len * 2))
    error = await _failure(stub, request, streamed)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == pb.CONTEXT_LENGTH_EXCEEDED
    assert error.message


async def test_engine_side_validation_errors_are_invalid_argument(stack: Stack, stub: Stub) -> None:
    # Valid JSON Schema, but the prompt leaves no room for max_tokens in the context.
    request = prompt_request(stack, max_tokens=stack.options.max_model_len * 4)
    error = await _failure(stub, request, streamed=False)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_nothing_leaks_after_bad_requests(stack: Stack, stub: Stub) -> None:
    requests = [r for r, _ in _bad_requests(stack).values()]
    overflow = prompt_request(stack)
    overflow.prompt = "word " * (stack.options.max_model_len * 2)
    requests.append(overflow)
    for streamed in (False, True):
        await asyncio.gather(
            *(_failure(stub, r, streamed) for r in requests for _ in range(3)),
            return_exceptions=False,
        )

    async def idle() -> bool:
        stats = await sim_stats(stack)
        return bool(stats["open_streams"] == 0 and stats["in_flight"] == 0)

    await eventually(idle, what="nothing open or in flight at the engine")
    load = await stub.GetLoad(pb.GetLoadRequest())
    assert load.adapter_in_flight == 0
