"""Readiness follows the engine; a dead engine is UNAVAILABLE; SIGTERM drains in-flight streams."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import pytest

from switchyard.common.errors import from_rpc_error
from switchyard.devstack.components import sim_args
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.contract.test_generation import prompt_request
from tests.support.processes import (
    SERVING,
    free_port,
    health_status,
    start,
    wait_health,
    wait_serving,
)
from tests.support.stacks import ENGINES, options, start_adapter, start_stack

NOT_SERVING = 2
LOAD_DELAY_S = 1.5


@pytest.mark.parametrize("engine", ENGINES)
def test_serving_only_after_the_engine_has_loaded(engine: str, log_dir: Path) -> None:
    # The adapter first, so that its own start-up time (long on a busy machine) cannot
    # race the engine's load: the engine then starts on the port the adapter watches.
    port = free_port()
    adapter = start_adapter(engine, f"http://127.0.0.1:{port}", log_dir)
    address = f"127.0.0.1:{adapter.port}"
    sim = None
    try:
        wait_health(adapter, address, NOT_SERVING)
        started = time.monotonic()
        opts = options(load_delay_s=LOAD_DELAY_S)
        sim = start(
            f"sim-{engine}",
            sim_args(engine, "127.0.0.1", port, f"demo-{engine}", opts),
            log_dir,
            port=port,
        )
        seen: set[int | None] = set()
        # The engine's load starts after its own start-up: it cannot be up before this.
        while time.monotonic() - started < LOAD_DELAY_S:
            seen.add(health_status(address))
            time.sleep(0.05)
        assert SERVING not in seen, "SERVING before the engine could generate"
        assert NOT_SERVING in seen, "the adapter answers health checks while its engine loads"
        wait_serving(adapter, address, timeout=30)
        assert time.monotonic() - started >= LOAD_DELAY_S
    finally:
        adapter.stop()
        if sim is not None:
            sim.stop()


@pytest.mark.parametrize("engine", ENGINES)
async def test_engine_down_is_unavailable(engine: str, log_dir: Path) -> None:
    adapter = start_adapter(engine, f"http://127.0.0.1:{free_port()}", log_dir)
    address = f"127.0.0.1:{adapter.port}"
    try:
        wait_health(adapter, address, NOT_SERVING)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            request = pb.GenerateRequest(model=f"demo-{engine}", prompt="hello")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Generate(request)
            error = from_rpc_error(caught.value)
            assert error.code == grpc.StatusCode.UNAVAILABLE
            assert error.reason == pb.ENGINE_UNAVAILABLE
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.GenerateStream(request):
                    pass
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListModels(pb.ListModelsRequest())
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        adapter.stop()


async def test_sigterm_finishes_in_flight_streams_and_refuses_new_ones(log_dir: Path) -> None:
    opts = options(ttft_s=0.05, itl_s=0.05)
    stack = start_stack("vllm", log_dir, opts)
    try:
        async with grpc.aio.insecure_channel(stack.address) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            request = prompt_request(stack, max_tokens=30, seed=1)
            request.include_usage = True
            call = stub.GenerateStream(request)
            first = await call.read()
            assert isinstance(first, pb.GenerateStreamResponse)
            stack.adapter.signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            assert health_status(stack.address) != SERVING
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Generate(prompt_request(stack, max_tokens=2), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            rest = []  # read() again: grpc.aio forbids mixing it with iteration on one call
            while (message := await call.read()) is not grpc.aio.EOF:
                assert isinstance(message, pb.GenerateStreamResponse)
                rest.append(message)
            assert rest[-1].finish_reason != pb.FINISH_REASON_UNSPECIFIED
            total = first.token_count + sum(m.token_count for m in rest)
            assert total == rest[-1].usage.completion_tokens
        assert stack.adapter.process.wait(timeout=15) == 0
    finally:
        stack.stop()
