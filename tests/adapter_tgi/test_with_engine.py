"""The TGI adapter in front of the simulated TGI, both real processes: what TGI really does.

Each test here pins an engine behaviour the adapter depends on (issue 10): where the
prompt's length is, what a JSON grammar admits, when TGI samples, how long an output
may get, and what `--api-key` guards.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from switchyard.devstack.components import SIM_LISTENING, sim_args
from switchyard.inference.errors import from_rpc_error
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.support.canonical import generate_request
from tests.support.polling import NotYet, eventually
from tests.support.processes import (
    Service,
    health_status,
    listening_port,
    start,
    wait_http,
    wait_serving,
)
from tests.support.stacks import TEST_OPTIONS, Stack, options, running_stack, start_adapter

if TYPE_CHECKING:
    from switchyard.inference.v1.inference_pb2_grpc import InferenceServiceAsyncStub as Stub

PROMPT = "The switchyard at dawn was"
MESSAGES = [("system", "Answer in JSON."), ("user", "Describe a switchyard.")]
KEY = "s3cret-engine-key"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack("tgi", tmp_path_factory.mktemp("adapter-tgi")) as s:
        yield s


@pytest.fixture(scope="module")
def wide_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A context well over TGI's 1024-token chunk."""
    opts = options(max_model_len=4096)
    with running_stack("tgi", tmp_path_factory.mktemp("adapter-tgi-wide"), opts, "-wide") as s:
        yield s


async def _stub(stack: Stack) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(stack.address) as channel:
        yield pb_grpc.InferenceServiceStub(channel)


@pytest.fixture
async def stub(stack: Stack) -> AsyncIterator[Stub]:
    async for s in _stub(stack):
        yield s


@pytest.fixture
async def wide_stub(wide_stack: Stack) -> AsyncIterator[Stub]:
    async for s in _stub(wide_stack):
        yield s


def _request(stack: Stack, kind: str, **sampling: Any) -> pb.GenerateRequest:
    if kind == "chat":
        return generate_request(stack.model, messages=MESSAGES, **sampling)
    return generate_request(stack.model, prompt=PROMPT, **sampling)


async def _run(stub: Stub, request: pb.GenerateRequest, streamed: bool) -> tuple[str, pb.Usage]:
    if not streamed:
        response = await stub.Generate(request)
        return response.text, response.usage
    request.include_usage = True
    messages = [m async for m in stub.GenerateStream(request)]
    return "".join(m.text_delta for m in messages), messages[-1].usage


# The prompt's length.


@pytest.mark.parametrize("kind", ["prompt", "chat"])
async def test_unary_usage_counts_the_prompt(stack: Stack, stub: Stub, kind: str) -> None:
    # Real TGI leaves `details.prefill` empty: the count is in `x-prompt-tokens`.
    _, unary = await _run(stub, _request(stack, kind, max_tokens=4, seed=1), streamed=False)
    _, streamed = await _run(stub, _request(stack, kind, max_tokens=4, seed=1), streamed=True)
    assert unary.prompt_tokens == streamed.prompt_tokens > 0
    assert unary.completion_tokens == streamed.completion_tokens == 4


# JSON mode.


@pytest.mark.parametrize("kind", ["prompt", "chat"])
@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_json_mode_writes_objects_with_keys(
    stack: Stack, stub: Stub, kind: str, streamed: bool
) -> None:
    documents = []
    for seed in range(8):
        request = _request(stack, kind, max_tokens=512, seed=seed)
        request.structured_output.json_object.SetInParent()
        text, usage = await _run(stub, request, streamed)
        assert usage.completion_tokens < 512, "the object ended before max_tokens"
        documents.append(json.loads(text))
    assert all(isinstance(d, dict) for d in documents), documents
    assert any(documents), f"objects with keys, not only {{}}: {documents}"


# Greedy decoding.


async def test_temperature_zero_is_greedy_even_with_top_p_and_top_k(
    stack: Stack, stub: Stub
) -> None:
    # TGI samples whenever a warper is on; the adapter must not send any when greedy.
    for kind, warpers in (("prompt", {"top_p": 0.5, "top_k": 5}), ("chat", {"top_p": 0.5})):
        plain, _ = await _run(stub, _request(stack, kind, max_tokens=24, temperature=0.0), False)
        for seed in range(3):
            request = _request(stack, kind, max_tokens=24, temperature=0.0, seed=seed, **warpers)
            text, _ = await _run(stub, request, streamed=seed == 2)
            assert text == plain, (kind, seed)


# Output length.


async def test_without_max_tokens_the_output_runs_to_eos_or_the_context(
    stack: Stack, stub: Stub
) -> None:
    # No default of 16 or 128 tokens: the model stops by itself...
    for seed in range(40):
        response = await stub.Generate(_request(stack, "prompt", seed=seed))
        if response.usage.completion_tokens > 128:
            assert response.finish_reason == pb.FINISH_REASON_STOP
            break
    else:
        raise AssertionError("no seed gave an output over 128 tokens")
    # ...or at the end of the context.
    for kind in ("prompt", "chat"):
        request = _request(stack, kind, seed=3)
        if kind == "prompt":
            request.prompt = " ".join(["token"] * 1000)
        else:
            request.chat.messages[1].content = " ".join(["token"] * 980)
        response = await stub.Generate(request)
        usage = response.usage
        assert response.finish_reason == pb.FINISH_REASON_LENGTH, kind
        assert usage.prompt_tokens + usage.completion_tokens == stack.options.max_model_len


async def test_context_limits_as_tgi_checks_them(wide_stack: Stack, wide_stub: Stub) -> None:
    # TGI checks prompt + min(max_tokens, 1024): a max_tokens past the context can pass...
    response = await wide_stub.Generate(_request(wide_stack, "prompt", max_tokens=5000, seed=2))
    assert response.finish_reason == pb.FINISH_REASON_STOP
    # ...and a prompt that leaves less than that is refused as a context overflow.
    request = _request(wide_stack, "prompt", max_tokens=2000)
    request.prompt = " ".join(["token"] * 3100)
    for streamed in (False, True):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _run(wide_stub, request, streamed)
        error = from_rpc_error(caught.value)
        assert (error.code, error.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.CONTEXT_LENGTH_EXCEEDED,
        )
        assert "1024 `max_new_tokens`" in error.message


@pytest.mark.parametrize("kind", ["prompt", "chat"])
@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_max_tokens_past_1024_is_held_to(
    wide_stack: Stack, wide_stub: Stub, kind: str, streamed: bool
) -> None:
    # Asked for 1500, TGI generates a second whole chunk (2048 tokens) unless stopped.
    request = _request(wide_stack, kind, max_tokens=1500, seed=1)
    request.structured_output.regex = "a( a){3000}"
    response_text, usage = await _run(wide_stub, request, streamed)
    assert usage.completion_tokens == 1500
    assert response_text == "a" + " a" * 1499


# The engine's --api-key.


def _keyed_sim(log_dir: Path) -> Service:
    args = [*sim_args("tgi", "127.0.0.1", 0, "demo-tgi", TEST_OPTIONS), "--api-key", KEY]
    sim = start("sim-tgi-keyed", args, log_dir, port=0)
    wait_http(sim, f"http://127.0.0.1:{listening_port(sim, SIM_LISTENING)}/health")
    return sim


@pytest.fixture(scope="module")
def keyed_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    sim = _keyed_sim(tmp_path_factory.mktemp("adapter-tgi-keyed"))
    yield sim
    sim.stop()


async def test_the_adapter_sends_the_engines_api_key(keyed_sim: Service, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{keyed_sim.port}"
    adapter = start_adapter("tgi", url, tmp_path, "-keyed", ADAPTER_ENGINE_API_KEY=KEY)
    try:
        address = f"127.0.0.1:{adapter.port}"
        await asyncio.to_thread(wait_serving, adapter, address)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            for kind in ("prompt", "chat"):
                for streamed in (False, True):
                    request = generate_request("demo-tgi", prompt=PROMPT, max_tokens=4)
                    if kind == "chat":
                        request = generate_request("demo-tgi", messages=MESSAGES, max_tokens=4)
                    text, usage = await _run(stub, request, streamed)
                    assert text
                    assert usage.completion_tokens == 4
    finally:
        adapter.stop()


@pytest.mark.parametrize("key", [None, "not-the-key"], ids=["no-key", "wrong-key"])
async def test_without_the_key_the_adapter_never_serves_and_says_why(
    keyed_sim: Service, tmp_path: Path, key: str | None
) -> None:
    # TGI's /health and /info stay open under --api-key; readiness must not stop there.
    env = {"ADAPTER_ENGINE_API_KEY": key} if key else {}
    url = f"http://127.0.0.1:{keyed_sim.port}"
    adapter = start_adapter("tgi", url, tmp_path, "-nokey", **env)
    try:
        await _wait_for_log(adapter, "ADAPTER_ENGINE_API_KEY")
        address = f"127.0.0.1:{adapter.port}"
        assert health_status(address) == health_pb2.HealthCheckResponse.NOT_SERVING
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Generate(generate_request("demo-tgi", prompt=PROMPT, max_tokens=4))
        assert "ADAPTER_ENGINE_API_KEY" in from_rpc_error(caught.value).message
    finally:
        adapter.stop()


async def _wait_for_log(service: Service, text: str) -> None:
    def logged() -> bool:
        if not service.alive():
            raise service.fail(f"exited before logging {text!r}")
        return text in service.log_path.read_text(errors="replace")

    try:
        await eventually(logged, what=f"{text!r} logged")
    except NotYet as exc:
        raise service.fail(str(exc)) from None
