"""The vLLM adapter in front of the vLLM simulator, both as real processes.

Two engine behaviours the adapter depends on: `--api-key` (vLLM guards `/v1/*`, `/v2/*`,
`/inference/*` and `/cohere/*`, not `/health`), and the output limit of a request without
`max_tokens` (vLLM completions stop at 16 tokens unless told otherwise).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from switchyard.devstack.components import SIM_LISTENING, sim_args
from switchyard.inference.errors import from_rpc_error
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.support.canonical import generate_request
from tests.support.polling import NotYet, eventually_sync
from tests.support.processes import (
    Service,
    health_status,
    listening_port,
    start,
    wait_http,
    wait_serving,
)
from tests.support.stacks import TEST_OPTIONS, Stack, running_stack, start_adapter

if TYPE_CHECKING:
    from switchyard.inference.v1.inference_pb2_grpc import InferenceServiceAsyncStub as Stub

MODEL = "demo-vllm"
KEY = "sk-vllm-engine-7c1e"
NOT_SERVING = 2
CONTEXT = TEST_OPTIONS.max_model_len


def wait_log(service: Service, text: str) -> str:
    """Poll the service's log until it contains `text`; the log."""

    def logged() -> str | None:
        log = service.log_path.read_text(errors="replace")
        if text in log:
            return log
        if not service.alive():
            raise service.fail(f"exited before logging {text!r}")
        return None

    try:
        return eventually_sync(logged, what=f"{text!r} logged")
    except NotYet as exc:
        raise service.fail(str(exc)) from None


@pytest.fixture(scope="module")
def keyed_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A simulator keyed through `VLLM_API_KEY` (as a Secret would set it); its URL."""
    args = sim_args("vllm", "127.0.0.1", 0, MODEL, TEST_OPTIONS)
    sim = start(
        "sim-vllm-keyed",
        args,
        tmp_path_factory.mktemp("keyed"),
        port=0,
        env={"VLLM_API_KEY": KEY},
    )
    try:
        url = f"http://127.0.0.1:{listening_port(sim, SIM_LISTENING)}"
        wait_http(sim, f"{url}/health")
        yield url
    finally:
        sim.stop()


async def _generate(address: str, request: pb.GenerateRequest) -> pb.GenerateResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub: Stub = pb_grpc.InferenceServiceStub(channel)
        return await stub.Generate(request, timeout=30)


async def test_with_the_key_the_adapter_serves(keyed_engine: str, tmp_path: Path) -> None:
    adapter = start_adapter("vllm", keyed_engine, tmp_path, ADAPTER_ENGINE_API_KEY=KEY)
    address = f"127.0.0.1:{adapter.port}"
    try:
        wait_serving(adapter, address)
        response = await _generate(address, generate_request(MODEL, prompt="Hi", max_tokens=3))
        assert response.usage.completion_tokens > 0
        assert KEY not in adapter.log_path.read_text()
    finally:
        adapter.stop()


@pytest.mark.parametrize("key", [None, "not-the-key"], ids=["missing", "wrong"])
async def test_without_the_right_key_the_adapter_is_not_ready_and_says_why(
    keyed_engine: str, tmp_path: Path, key: str | None
) -> None:
    env = {} if key is None else {"ADAPTER_ENGINE_API_KEY": key}
    adapter = start_adapter("vllm", keyed_engine, tmp_path, **env)
    address = f"127.0.0.1:{adapter.port}"
    try:
        # The engine's /health answers 200 without a key; the adapter must not trust it alone.
        log = wait_log(adapter, "refused the adapter's credentials on GET /v1/models (HTTP 401)")
        assert "set ADAPTER_ENGINE_API_KEY to the engine's --api-key" in log
        assert health_status(address) == NOT_SERVING
        assert '"engine_ready"' not in adapter.log_path.read_text()
        if key is not None:
            assert key not in adapter.log_path.read_text()
        # A request that would go out anyway is refused by the engine: a clear error.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _generate(address, generate_request(MODEL, prompt="Hi", max_tokens=3))
        error = from_rpc_error(refused.value)
        assert (error.code, error.reason) == (grpc.StatusCode.INTERNAL, pb.ENGINE_ERROR)
        assert "refused the adapter's credentials (HTTP 401)" in error.message
        # One without max_tokens cannot even be sized: the same cause, as UNAVAILABLE.
        with pytest.raises(grpc.aio.AioRpcError) as unsized:
            await _generate(address, generate_request(MODEL, prompt="Hi"))
        error = from_rpc_error(unsized.value)
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert "ADAPTER_ENGINE_API_KEY" in error.message
    finally:
        adapter.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack("vllm", tmp_path_factory.mktemp("vllm-limits")) as s:
        yield s


@pytest.fixture
async def stub(stack: Stack) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(stack.address) as channel:
        yield pb_grpc.InferenceServiceStub(channel)


REQUESTS = {
    "prompt": lambda: generate_request(MODEL, prompt="Once upon a time", ignore_eos=True),
    "chat": lambda: generate_request(
        MODEL, messages=[("user", "Tell me everything.")], ignore_eos=True
    ),
}


@pytest.mark.parametrize("kind", list(REQUESTS))
async def test_without_max_tokens_generation_runs_to_the_full_context(
    stub: Stub, kind: str
) -> None:
    # ignore_eos: only the output limit can end it. vLLM alone would stop a completion at 16.
    response = await stub.Generate(REQUESTS[kind](), timeout=60)
    assert response.finish_reason == pb.FINISH_REASON_LENGTH
    assert response.usage.prompt_tokens + response.usage.completion_tokens == CONTEXT
    request = REQUESTS[kind]()
    request.include_usage = True
    messages = [m async for m in stub.GenerateStream(request, timeout=60)]
    last = messages[-1]
    assert last.finish_reason == pb.FINISH_REASON_LENGTH
    assert last.usage.prompt_tokens + last.usage.completion_tokens == CONTEXT
    assert sum(m.token_count for m in messages) == last.usage.completion_tokens
