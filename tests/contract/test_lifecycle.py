"""Readiness follows the engine; a dead engine is UNAVAILABLE; SIGTERM drains in-flight streams."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import httpx
import pytest

from switchyard.devstack.components import sim_args
from switchyard.inference.errors import from_rpc_error
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.contract.test_generation import prompt_request
from tests.support.polling import eventually, eventually_sync
from tests.support.processes import (
    SERVING,
    Service,
    free_port,
    health_status,
    start,
    wait_health,
    wait_serving,
)
from tests.support.stacks import ENGINES, options, start_adapter, start_stack

NOT_SERVING = 2


def _start_sim(engine: str, port: int, log_dir: Path, load_delay_s: float) -> Service:
    opts = options(load_delay_s=load_delay_s)
    args = sim_args(engine, "127.0.0.1", port, f"demo-{engine}", opts)
    return start(f"sim-{engine}", args, log_dir, port=port)


def _loading(engine: str, sim: Service) -> bool:
    """Whether `sim` is loading its model: vLLM and TGI do not listen meanwhile, SGLang
    listens and answers 503 (it is `Starting`)."""
    if engine != "sglang":
        log = sim.log_tail()
        return "loading: not listening" in log and "listening on" not in log
    try:
        return httpx.get(f"http://127.0.0.1:{sim.port}/health", timeout=5).status_code == 503
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("engine", ENGINES)
def test_not_serving_while_the_engine_loads(engine: str, log_dir: Path) -> None:
    port = free_port()
    # An hour's load: the engine loads for the whole test, however slow the machine.
    sim = _start_sim(engine, port, log_dir, load_delay_s=3600)
    adapter = start_adapter(engine, f"http://127.0.0.1:{port}", log_dir)
    address = f"127.0.0.1:{adapter.port}"
    try:
        eventually_sync(lambda: _loading(engine, sim), what=f"{engine} loading")
        # The adapter answers health checks while its engine loads, and not with SERVING.
        wait_health(adapter, address, NOT_SERVING)
        assert _loading(engine, sim), sim.log_tail()
        assert health_status(address) == NOT_SERVING
    finally:
        adapter.stop()
        sim.stop()


@pytest.mark.parametrize("engine", ENGINES)
def test_serving_once_the_engine_has_loaded(engine: str, log_dir: Path) -> None:
    # The adapter first, not serving while nothing answers on its engine's port; then the
    # engine, loading a moment before it can generate.
    port = free_port()
    adapter = start_adapter(engine, f"http://127.0.0.1:{port}", log_dir)
    address = f"127.0.0.1:{adapter.port}"
    sim = None
    try:
        wait_health(adapter, address, NOT_SERVING)
        sim = _start_sim(engine, port, log_dir, load_delay_s=0.5)
        wait_serving(adapter, address)
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

            async def not_serving() -> bool:
                return bool(await asyncio.to_thread(health_status, stack.address) != SERVING)

            await eventually(not_serving, what="the adapter no longer SERVING")
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
