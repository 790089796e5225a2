"""The engine client sends `ADAPTER_ENGINE_API_KEY` as a Bearer token; a refusal says so.

Against a real engine protocol: the vLLM simulator started with `--api-key`, which (as vLLM)
guards `/v1/*` and leaves `/health` and `/metrics` open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from switchyard.adapter.engine import EngineClient
from switchyard.adapter.settings import AdapterSettings
from switchyard.adapter.translation import EngineHTTPError
from switchyard.adapter_vllm.translation import VllmTranslation
from switchyard.devstack.components import sim_args
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from tests.support.canonical import generate_request
from tests.support.processes import free_port, start, wait_http
from tests.support.stacks import TEST_OPTIONS

MODEL = "demo-vllm"
KEY = "sk-engine-test-3f9a"


@pytest.fixture(scope="module")
def keyed_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A vLLM simulator that requires KEY; its base URL."""
    port = free_port()
    args = [*sim_args("vllm", "127.0.0.1", port, MODEL, TEST_OPTIONS), "--api-key", KEY]
    sim = start("sim-vllm-keyed", args, tmp_path_factory.mktemp("api-key"), port=port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(sim, f"{url}/health")
        yield url
    finally:
        sim.stop()


async def _client(url: str, key: str | None) -> AsyncIterator[EngineClient]:
    settings = AdapterSettings.model_validate(
        {"engine_url": url, "served_model_name": MODEL, "engine_api_key": key}
    )
    client = EngineClient(settings, VllmTranslation(MODEL))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def with_key(keyed_engine: str) -> AsyncIterator[EngineClient]:
    async for client in _client(keyed_engine, KEY):
        yield client


def _request(**sampling: Any) -> pb.GenerateRequest:
    return generate_request(MODEL, prompt="Hello there", **sampling)


async def test_the_key_reaches_every_guarded_route(with_key: EngineClient) -> None:
    assert await with_key.max_model_len() == TEST_OPTIONS.max_model_len
    completion = await with_key.complete(_request(max_tokens=3, ignore_eos=True))
    assert completion.completion_tokens == 3
    stream = with_key.stream(_request(max_tokens=4, ignore_eos=True))
    deltas = [d async for batch in stream for d in batch]
    assert sum(d.token_count for d in deltas) == 4
    assert await with_key.healthy()
    assert "vllm:num_requests_running" in await with_key.metrics_text()


@pytest.mark.parametrize("key", [None, "not-the-key"], ids=["missing", "wrong"])
async def test_a_refused_key_is_a_clear_engine_error(keyed_engine: str, key: str | None) -> None:
    async for client in _client(keyed_engine, key):
        # /health is open on vLLM even with --api-key: health alone cannot tell.
        assert await client.healthy()
        with pytest.raises(EngineHTTPError) as info:
            await client.max_model_len()
        assert info.value.status == 401
        assert "ADAPTER_ENGINE_API_KEY" in str(info.value)
        request = _request(max_tokens=3)
        with pytest.raises(InferenceError) as unary:
            await client.complete(request)
        with pytest.raises(InferenceError) as streamed:
            async for _ in client.stream(request):
                pass
        for error in (unary.value, streamed.value):
            assert (error.code, error.reason) == (grpc.StatusCode.INTERNAL, pb.ENGINE_ERROR)
            assert "refused the adapter's credentials (HTTP 401)" in error.message
            assert "ADAPTER_ENGINE_API_KEY" in error.message


def test_the_key_is_not_in_the_settings_repr() -> None:
    settings = AdapterSettings.model_validate(
        {"engine_url": "http://127.0.0.1:1", "served_model_name": MODEL, "engine_api_key": KEY}
    )
    assert KEY not in repr(settings)
    assert KEY not in str(settings.model_dump())
