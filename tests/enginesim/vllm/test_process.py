"""The simulator as a real process: closed port while loading, client disconnects abort."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.enginesim.vllm.conftest import MODEL, argv
from tests.enginesim.vllm.test_routes import sample
from tests.support.polling import eventually, eventually_sync
from tests.support.processes import Service, free_port, start, wait_http


def _start(log_dir: Path, *extra: str) -> Service:
    port = free_port()
    args = ["switchyard.enginesim.vllm", *argv("--host", "127.0.0.1", "--port", str(port), *extra)]
    return start("sim-vllm", args, log_dir, port=port)


@pytest.fixture(scope="module")
def slow_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    sim = _start(tmp_path_factory.mktemp("vllm-sim"), "--sim-ttft", "0.01", "--sim-itl", "0.1")
    url = f"http://127.0.0.1:{sim.port}"
    try:
        wait_http(sim, f"{url}/health")
        yield url
    finally:
        sim.stop()


def test_not_listening_while_loading(tmp_path: Path) -> None:
    # An hour's load: the port stays closed for the whole test, however slow the machine.
    sim = _start(tmp_path, "--sim-load-delay", "3600")
    try:
        eventually_sync(lambda: "loading: not listening" in sim.log_tail(), what="loading")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{sim.port}/health", timeout=10.0)
        assert sim.alive()
        assert "listening on" not in sim.log_tail()
    finally:
        assert sim.stop(timeout=30) == 0  # SIGTERM ends the load: a clean exit


def test_listens_once_loaded(tmp_path: Path) -> None:
    sim = _start(tmp_path, "--sim-load-delay", "0.5")
    try:
        wait_http(sim, f"http://127.0.0.1:{sim.port}/health")
        log = sim.log_tail()
        assert log.index("loading: not listening") < log.index("listening on"), log
    finally:
        sim.stop()


async def _stats(client: httpx.AsyncClient) -> dict[str, Any]:
    stats: dict[str, Any] = (await client.get("/sim/stats")).json()
    return stats


async def _settled(client: httpx.AsyncClient, aborted: int) -> dict[str, Any]:
    async def settled() -> dict[str, Any] | None:
        stats = await _stats(client)
        return stats if stats["aborted"] >= aborted and stats["in_flight"] == 0 else None

    stats: dict[str, Any] = await eventually(settled, what=f"{aborted} aborted, none in flight")
    return stats


async def test_closing_a_stream_aborts_it(slow_sim: str) -> None:
    async with httpx.AsyncClient(base_url=slow_sim) as client:
        before = (await _stats(client))["aborted"]
        body = {"model": MODEL, "prompt": "x", "max_tokens": 100, "stream": True}
        trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        headers = {"traceparent": trace, "x-request-id": "closing-stream"}
        async with client.stream("POST", "/v1/completions", json=body, headers=headers) as response:
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("data: {")
            assert (await _stats(client))["open_streams"] == 1
        stats = await _settled(client, before + 1)
        assert stats["open_streams"] == 0
        assert {"request_id": "closing-stream", "traceparent": trace} in stats["recent"]
        metrics = (await client.get("/metrics")).text
        assert sample(metrics, "vllm:num_requests_running") == 0
        # vLLM drops a request its client abandoned without counting it as finished.
        assert sample(metrics, "vllm:request_success_total", finished_reason="abort") == 0
        assert 0 < sample(metrics, "vllm:generation_tokens_total") < 100


async def test_leaving_a_unary_request_aborts_it(slow_sim: str) -> None:
    async with httpx.AsyncClient(base_url=slow_sim) as client:
        before = await _stats(client)
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 100}
        # Leave once the engine works on it (100 tokens at 0.1 s: ten seconds of work), not
        # after a fixed time: a slow machine may not have sent it yet.
        call = asyncio.create_task(client.post("/v1/chat/completions", json=chat, timeout=60))

        async def at_the_engine() -> bool:
            stats = await _stats(client)
            return bool(stats["requests"] > before["requests"] and stats["in_flight"] == 1)

        await eventually(at_the_engine, what="the request at the engine")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        stats = await _settled(client, before["aborted"] + 1)
        assert stats["open_streams"] == 0
        assert (await client.get("/metrics")).status_code == 200
