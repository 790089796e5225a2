"""An adapter's stop: NOT_SERVING first, still accepting calls for the drain delay (routers
learn of NOT_SERVING asynchronously), then refusing new calls with UNAVAILABLE before any
output (which an edge retries elsewhere) while the streams in flight finish; then it exits.

Real processes: a simulator whose stall fault holds a stream open, and its adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from switchyard.adapter.health import SERVICE_NAME
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.support.canonical import generate_request
from tests.support.polling import eventually
from tests.support.stacks import Stack, start_stack

TOKENS = 24


@contextlib.asynccontextmanager
async def draining_stack(log_dir: Path, delay_s: float) -> AsyncIterator[Stack]:
    env = {"ADAPTER_DRAIN_DELAY_S": str(delay_s), "ADAPTER_SHUTDOWN_GRACE_S": "120"}
    stack = await asyncio.to_thread(start_stack, "vllm", log_dir, adapter_env=env)
    try:
        yield stack
    finally:
        stack.adapter.process.kill()  # one still in its drain delay would wait it out
        await asyncio.to_thread(stack.stop)


def request(stack: Stack) -> pb.GenerateRequest:
    return generate_request(
        stack.model, messages=[("user", "go")], max_tokens=TOKENS, ignore_eos=True
    )


async def not_serving(channel: grpc.aio.Channel) -> bool:
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    return bool(answer.status == health_pb2.HealthCheckResponse.NOT_SERVING)


async def test_not_serving_at_once_yet_still_accepting_during_the_drain_delay(
    tmp_path: Path,
) -> None:
    async with (
        draining_stack(tmp_path, delay_s=3600) as stack,
        grpc.aio.insecure_channel(stack.address) as channel,
    ):
        stack.adapter.process.send_signal(signal.SIGTERM)
        await eventually(lambda: not_serving(channel), what="NOT_SERVING after SIGTERM")
        # A router that has not seen NOT_SERVING yet is still served, not refused.
        stub = pb_grpc.InferenceServiceStub(channel)
        reply = await stub.Generate(request(stack), timeout=60)
        assert reply.finish_reason == pb.FINISH_REASON_LENGTH
        assert reply.usage.completion_tokens == TOKENS


async def test_after_the_delay_new_calls_are_refused_and_streams_in_flight_finish(
    tmp_path: Path,
) -> None:
    async with (
        draining_stack(tmp_path, delay_s=0) as stack,
        grpc.aio.insecure_channel(stack.address) as channel,
    ):
        stub = pb_grpc.InferenceServiceStub(channel)
        async with stack.stalled(after=1):
            stream = stub.GenerateStream(request(stack), timeout=120)
            first = await stream.read()
            assert isinstance(first, pb.GenerateStreamResponse)

            stack.adapter.process.send_signal(signal.SIGTERM)

            async def draining() -> bool:
                return "adapter_draining" in stack.adapter.log_path.read_text(errors="replace")

            await eventually(draining, what="the adapter draining")
            # Refused before any output: the code an edge retries on another endpoint.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Generate(request(stack), timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert stack.adapter.alive()  # held open by the stream in flight
        # The stall is over: the stream goes on to its end.
        messages = [first]
        while isinstance(message := await stream.read(), pb.GenerateStreamResponse):
            messages.append(message)
        assert sum(m.token_count for m in messages) == TOKENS
        assert messages[-1].finish_reason == pb.FINISH_REASON_LENGTH
        assert await stream.code() == grpc.StatusCode.OK

        async def exited() -> bool:
            return not stack.adapter.alive()

        await eventually(exited, what="the adapter exits once drained")
        assert stack.adapter.process.returncode == 0
