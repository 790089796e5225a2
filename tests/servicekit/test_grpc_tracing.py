"""Server streams traced by OpenTelemetry end in their own task when the client cancels:
no "Failed to detach context" ERROR, and the handler sees the cancellation."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest

from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from switchyard.servicekit.grpc_tracing import EndStreamsInTheirTask
from tests.support.polling import eventually_sync
from tests.support.stacks import Stack, options, start_stack

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
STREAMS = 20

_entered: contextvars.ContextVar[str] = contextvars.ContextVar("entered", default="")


class _Context:
    """A servicer context whose write waits until the test says so (a slow client)."""

    def __init__(self) -> None:
        self.writing = asyncio.Event()
        self.written: list[int] = []

    async def write(self, message: int) -> None:
        self.written.append(message)
        self.writing.set()
        await asyncio.Event().wait()  # never done: the RPC is cancelled meanwhile


def _streaming_handler(seen: list[str]) -> grpc.RpcMethodHandler[Any, Any]:
    async def numbers(request: object, context: object) -> AsyncIterator[int]:
        token = _entered.set("inside")  # as contrib's interceptor attaches the trace context
        try:
            for n in range(1000):
                yield n
                await asyncio.sleep(0)  # the engine's next chunk
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        except GeneratorExit:
            seen.append("generator exit")
            raise
        finally:
            _entered.reset(token)  # raises if run in another task's context
            seen.append("reset")

    return grpc.unary_stream_rpc_method_handler(numbers)


async def test_cancelled_while_writing_the_handler_sees_the_cancellation_in_its_task() -> None:
    seen: list[str] = []
    handler = _streaming_handler(seen)

    async def continuation(details: object) -> grpc.RpcMethodHandler[Any, Any]:
        return handler

    wrapped = await EndStreamsInTheirTask().intercept_service(continuation, object())  # type: ignore[arg-type]
    assert wrapped is not None
    assert asyncio.iscoroutinefunction(wrapped.unary_stream)  # grpc's reader/writer API
    context = _Context()
    rpc = asyncio.create_task(wrapped.unary_stream(object(), context))
    await asyncio.wait_for(context.writing.wait(), 30)
    rpc.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rpc
    assert seen == ["cancelled", "reset"]
    assert context.written == [0]


def test_other_handlers_are_left_as_they_are() -> None:
    async def unary(request: object, context: object) -> int:
        return 1

    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(unary)

    async def continuation(details: object) -> grpc.RpcMethodHandler[Any, Any]:
        return handler

    async def intercepted() -> grpc.RpcMethodHandler[Any, Any] | None:
        return await EndStreamsInTheirTask().intercept_service(continuation, object())  # type: ignore[arg-type]

    assert asyncio.run(intercepted()) is handler


@pytest.fixture(scope="module")
def traced_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A vLLM adapter recording spans (sampled, exported nowhere), fast tokens: the client's
    cancellations often land while a message is being written."""
    env = {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_EXPORTER": "none"}
    stack = start_stack(
        "vllm", tmp_path_factory.mktemp("traced"), options(itl_s=0.001), adapter_env=env
    )
    try:
        yield stack
    finally:
        stack.stop()


def _records(log: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


async def test_streams_the_client_cancels_are_one_info_record_each_and_no_error(
    traced_stack: Stack,
) -> None:
    async with grpc.aio.insecure_channel(traced_stack.address) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        for i in range(STREAMS):
            request = pb.GenerateRequest(
                request_id=f"cancelled-{i}",
                model=traced_stack.model,
                prompt="hello",
                sampling=pb.SamplingParams(max_tokens=500, ignore_eos=True),
            )
            call = stub.GenerateStream(request, metadata=(("traceparent", TRACEPARENT),))
            received = 0
            async for _ in call:
                received += 1
                if received == 3:
                    break
            call.cancel()

    def generate_records() -> list[dict[str, Any]]:
        records = _records(traced_stack.adapter.log_path)
        done = [r for r in records if r.get("event") == "generate"]
        return done if len(done) >= STREAMS else []

    records = eventually_sync(generate_records, what=f"{STREAMS} generate records")
    assert sorted(r["request_id"] for r in records) == sorted(
        f"cancelled-{i}" for i in range(STREAMS)
    )
    assert {(r["level"], r["code"]) for r in records} == {("info", "CANCELLED")}
    # A generator closed by the loop's finalizer logged its ERROR before its record.
    problems = [
        r
        for r in _records(traced_stack.adapter.log_path)
        if r.get("level") in ("error", "critical")
    ]
    assert not problems, problems
