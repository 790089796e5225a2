"""Readiness against engines started with `--api-key`: a refused key means NOT_SERVING.

Health routes are open on every engine, so readiness proves the adapter's key on the
engine's model info (a guarded route). The engines are real simulator processes, each
restartable on its port with another key (what a rollout of a new Secret does):
- in process, `Readiness.check` is driven step by step, so each test shows which event
  made the adapter re-prove its key (a refused generation, a failed health check) and
  that the cause is logged once, not at every check;
- as processes, adapter and engine show the same through gRPC health, as routers see it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import orjson
import pytest
from grpc_health.v1.health import aio as health_aio
from prometheus_client import Gauge
from structlog.testing import capture_logs

from switchyard.adapter.engine import EngineClient
from switchyard.adapter.health import Readiness
from switchyard.adapter.settings import AdapterSettings
from switchyard.adapter.translation import Translation
from switchyard.adapter_sglang.translation import SglangTranslation
from switchyard.adapter_tgi.translation import TgiTranslation
from switchyard.adapter_vllm.translation import VllmTranslation
from switchyard.devstack.components import served_name, sim_args
from switchyard.inference.errors import InferenceError, from_rpc_error
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.support.canonical import generate_request
from tests.support.polling import eventually, eventually_sync
from tests.support.processes import (
    SERVING,
    Service,
    free_port,
    health_status,
    start,
    wait_http,
    wait_serving,
)
from tests.support.stacks import ENGINES, TEST_OPTIONS, start_adapter

if TYPE_CHECKING:
    from switchyard.inference.v1.inference_pb2_grpc import InferenceServiceAsyncStub as Stub

KEY = "sk-engine-key-one-4e1a"
NEW_KEY = "sk-engine-key-two-9b3c"
NOT_SERVING = 2
REFUSED = "engine_credentials_refused"
TRANSLATIONS: dict[str, Callable[[str], Translation]] = {
    "vllm": VllmTranslation,
    "sglang": SglangTranslation,
    "tgi": TgiTranslation,
}


class Engine:
    """One engine simulator on a fixed port, restarted with whatever key a test gives."""

    def __init__(self, kind: str, log_dir: Path) -> None:
        self.kind = kind
        self.model = served_name(kind)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_dir = log_dir
        self._starts = 0
        self._sim: Service | None = None

    def start(self, key: str | None) -> None:
        """(Re)start it, requiring `key` (None: no key at all), and wait until it answers."""
        self.stop()
        self._starts += 1
        args = sim_args(self.kind, "127.0.0.1", self.port, self.model, TEST_OPTIONS)
        if key is not None:
            args += ["--api-key", key]
        self._sim = start(f"sim-{self.kind}-{self._starts}", args, self._log_dir, port=self.port)
        wait_http(self._sim, f"{self.url}/sim/stats")  # open on every simulator, key or not

    def stop(self) -> None:
        if self._sim is not None:
            self._sim.stop()
            self._sim = None


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    sim = Engine(request.param, tmp_path)
    try:
        yield sim
    finally:
        sim.stop()


def _refusals(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == REFUSED]


def _request(engine: Engine) -> pb.GenerateRequest:
    return generate_request(engine.model, prompt="Hello there", max_tokens=3)


# -- in process: Readiness and EngineClient, checks driven one by one ----------------------


def _client(engine: Engine, key: str | None) -> EngineClient:
    settings = AdapterSettings.model_validate(
        {"engine_url": engine.url, "served_model_name": engine.model, "engine_api_key": key}
    )
    return EngineClient(settings, TRANSLATIONS[engine.kind](engine.model))


def _readiness(client: EngineClient) -> Readiness:
    """Readiness whose checks only the test runs (its own loop is not started)."""
    gauge = Gauge("engine_ready", "Readiness under test.", registry=None)
    return Readiness(client, health_aio.HealthServicer(), interval_s=3600, gauge=gauge)


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[EngineClient]:
    """An engine client that sends KEY."""
    c = _client(engine, KEY)
    try:
        yield c
    finally:
        await c.aclose()


async def _generation_error(client: EngineClient, request: pb.GenerateRequest) -> Any:
    """The error a generation gets now; None for UNAVAILABLE, which a connection pooled
    before the engine restarted may give first ("not yet")."""
    try:
        await client.complete(request)
    except InferenceError as error:
        return None if error.code == grpc.StatusCode.UNAVAILABLE else error
    raise AssertionError("the engine accepted a key it was not started with")


@pytest.mark.parametrize(
    ("adapter_key", "fix"),
    [(None, "ADAPTER_ENGINE_API_KEY is not set"), ("not-the-key", "is not the engine's key")],
    ids=["missing", "wrong"],
)
async def test_a_refused_key_is_not_serving_and_logged_once(
    engine: Engine, adapter_key: str | None, fix: str
) -> None:
    await asyncio.to_thread(engine.start, KEY)
    client = _client(engine, adapter_key)
    readiness = _readiness(client)
    try:
        with capture_logs() as logs:
            results = [await readiness.check() for _ in range(3)]
    finally:
        await client.aclose()
    assert results == [False, False, False]
    assert not readiness.ready
    # Three checks, three refusals: the cause is told once, and plainly.
    [refusal] = _refusals(logs)
    assert refusal["log_level"] == "warning"
    assert refusal["fix"].startswith("ADAPTER_ENGINE_API_KEY")
    assert fix in refusal["fix"]
    assert "--api-key" in refusal["fix"]
    assert "HTTP 401" in refusal["error"]
    assert "engine_info_failed" not in [entry["event"] for entry in logs]
    if adapter_key is not None:
        assert adapter_key not in repr(logs)


async def test_a_refused_generation_makes_readiness_prove_the_key_again(
    engine: Engine, client: EngineClient
) -> None:
    readiness = _readiness(client)
    await asyncio.to_thread(engine.start, KEY)
    assert await readiness.check()
    # The engine restarts with another key between two checks: health alone cannot tell.
    await asyncio.to_thread(engine.start, NEW_KEY)
    with capture_logs() as logs:
        error = await eventually(lambda: _generation_error(client, _request(engine)))
        assert "refused the adapter's credentials (HTTP 401)" in error.message
        # The refusal asked for a check that reads the guarded info route again.
        assert not await readiness.check()
        assert not await readiness.check()
    assert len(_refusals(logs)) == 1
    # The engine comes back with the adapter's key: the next check serves again.
    await asyncio.to_thread(engine.start, KEY)
    assert await readiness.check()
    completion = await client.complete(_request(engine))
    assert completion.completion_tokens > 0


async def test_an_engine_back_from_a_failed_health_check_proves_the_key_first(
    engine: Engine, client: EngineClient
) -> None:
    readiness = _readiness(client)
    await asyncio.to_thread(engine.start, KEY)
    assert await readiness.check()
    await asyncio.to_thread(engine.stop)
    assert not await readiness.check()
    await asyncio.to_thread(engine.start, NEW_KEY)  # a restart that changed the key
    with capture_logs() as logs:
        assert not await readiness.check()
    assert len(_refusals(logs)) == 1


# -- as processes: adapter and engine, gRPC health as a router sees it ---------------------


def _events(adapter: Service, event: str) -> list[dict[str, Any]]:
    found = []
    for line in adapter.log_path.read_text(errors="replace").splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            found.append(entry)
    return found


async def _generate(address: str, request: pb.GenerateRequest) -> pb.GenerateResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub: Stub = pb_grpc.InferenceServiceStub(channel)
        return await stub.Generate(request, timeout=30)


async def _error_through(address: str, request: pb.GenerateRequest) -> Any:
    """The error a Generate gets now (None for UNAVAILABLE: "not yet")."""
    try:
        await _generate(address, request)
    except grpc.aio.AioRpcError as exc:
        error = from_rpc_error(exc)
        return None if error.code == grpc.StatusCode.UNAVAILABLE else error
    raise AssertionError("the engine accepted a key it was not started with")


def _wait_status(adapter: Service, address: str, status: int, what: str) -> None:
    def reached() -> bool:
        if not adapter.alive():
            raise adapter.fail(f"exited while waiting for {what}")
        return health_status(address) == status

    eventually_sync(reached, interval=0.05, what=what)


async def test_an_adapter_started_with_a_refused_key_waits_for_the_engine_to_take_it(
    engine: Engine, tmp_path: Path
) -> None:
    await asyncio.to_thread(engine.start, KEY)
    adapter = start_adapter(engine.kind, engine.url, tmp_path)  # no ADAPTER_ENGINE_API_KEY
    address = f"127.0.0.1:{adapter.port}"
    try:
        [refusal] = eventually_sync(lambda: _events(adapter, REFUSED), what="the cause logged")
        assert "ADAPTER_ENGINE_API_KEY is not set" in refusal["fix"]
        await asyncio.to_thread(_wait_status, adapter, address, NOT_SERVING, "NOT_SERVING")
        # The engine is restarted without a key (it now takes what the adapter sends).
        await asyncio.to_thread(engine.start, None)
        await asyncio.to_thread(wait_serving, adapter, address)
        assert (await _generate(address, _request(engine))).usage.completion_tokens > 0
        assert len(_events(adapter, REFUSED)) == 1
        # The refusal is reported as one (never as an info failure). A check that began just
        # before the engine's restart may find it gone mid-check: that one is no refusal.
        failures = _events(adapter, "engine_info_failed")
        assert all("ClientConnectorError" in f["error"] for f in failures), failures
    finally:
        adapter.stop()


async def test_a_serving_adapter_whose_engine_changed_its_key_stops_serving_until_it_matches(
    engine: Engine, tmp_path: Path
) -> None:
    await asyncio.to_thread(engine.start, KEY)
    adapter = start_adapter(engine.kind, engine.url, tmp_path, ADAPTER_ENGINE_API_KEY=KEY)
    address = f"127.0.0.1:{adapter.port}"
    try:
        await asyncio.to_thread(wait_serving, adapter, address)
        assert (await _generate(address, _request(engine))).usage.completion_tokens > 0
        await asyncio.to_thread(engine.start, NEW_KEY)
        error = await eventually(lambda: _error_through(address, _request(engine)))
        assert (error.code, error.reason) == (grpc.StatusCode.INTERNAL, pb.ENGINE_ERROR)
        assert "ADAPTER_ENGINE_API_KEY" in error.message
        await asyncio.to_thread(_wait_status, adapter, address, NOT_SERVING, "NOT_SERVING")
        eventually_sync(lambda: _events(adapter, REFUSED), what="the cause logged")
        await asyncio.to_thread(engine.start, KEY)
        await asyncio.to_thread(wait_serving, adapter, address)
        assert health_status(address) == SERVING
        assert (await _generate(address, _request(engine))).usage.completion_tokens > 0
        assert len(_events(adapter, REFUSED)) == 1
        assert KEY not in adapter.log_path.read_text()
    finally:
        adapter.stop()
