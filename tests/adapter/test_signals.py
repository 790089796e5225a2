"""Autoscaling signals: each adapter republishes its engine's load (requests running and
waiting, KV-cache use) under one set of Prometheus names, labelled by engine and model.

Real simulators export the engines' own metric names; the adapter reads them. The
simulator runs two requests at once and queues the rest; its stall fault keeps requests
in flight however slow the machine is, so the gauges can be watched moving with load.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.support.canonical import generate_request
from tests.support.polling import eventually
from tests.support.processes import free_port
from tests.support.stacks import Stack, options, start_stack

RUNNING = "switchyard_adapter_engine_running_requests"
WAITING = "switchyard_adapter_engine_waiting_requests"
KV = "switchyard_adapter_kv_cache_usage_ratio"
#: The engines that report KV-cache use (TGI has no such metric).
REPORTS_KV = {"vllm": True, "sglang": True, "tgi": False}
#: Requests running and waiting with five in flight. vLLM and SGLang run two at once here
#: (`--max-num-seqs`, `--max-running-requests`) and queue the rest; TGI's one limit refuses
#: past it rather than queue, so its batch takes all five.
UNDER_LOAD = {"vllm": (2, 3), "sglang": (2, 3), "tgi": (5, 0)}


@contextlib.asynccontextmanager
async def signalling_stack(engine: str, log_dir: Path) -> AsyncIterator[tuple[Stack, str]]:
    """A simulator (two requests at once, but TGI) and its adapter, exporting its load every
    50 ms; yields the stack and the adapter's metrics URL."""
    port = free_port()
    env = {"ADAPTER_METRICS_PORT": str(port), "ADAPTER_LOAD_EXPORT_INTERVAL_S": "0.05"}
    opts = options(max_running=None if engine == "tgi" else 2)
    stack = await asyncio.to_thread(start_stack, engine, log_dir, opts, adapter_env=env)
    try:
        yield stack, f"http://127.0.0.1:{port}/metrics"
    finally:
        await asyncio.to_thread(stack.stop)


async def signals(http: httpx.AsyncClient, url: str, engine: str, model: str) -> dict[str, float]:
    """The three gauges' values for this engine and model, as scraped (absent: not there)."""
    page = (await http.get(url)).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name in (RUNNING, WAITING, KV) and sample.labels == {
                "engine": engine,
                "model": model,
            }:
                found[sample.name] = sample.value
    return found


@pytest.mark.parametrize("engine", ["vllm", "sglang", "tgi"])
async def test_the_load_gauges_move_with_the_engines_load(engine: str, tmp_path: Path) -> None:
    async with signalling_stack(engine, tmp_path) as (stack, url), httpx.AsyncClient() as http:

        async def shows(running: int, waiting: int) -> dict[str, float] | None:
            seen = await signals(http, url, engine, stack.model)
            ok = seen.get(RUNNING) == running and seen.get(WAITING) == waiting
            return seen if ok else None

        idle = await eventually(lambda: shows(0, 0), what="an idle engine's gauges")
        assert (KV in idle) is REPORTS_KV[engine]
        if REPORTS_KV[engine]:
            assert idle[KV] == 0

        # Five requests held in flight.
        async with (
            stack.stalled(after=1),
            grpc.aio.insecure_channel(stack.address) as channel,
        ):
            stub = pb_grpc.InferenceServiceStub(channel)
            request = generate_request(
                stack.model, messages=[("user", "hold on " * 20)], max_tokens=64
            )
            calls = [stub.GenerateStream(request, timeout=120) for _ in range(5)]
            try:
                running, waiting = UNDER_LOAD[engine]
                busy = await eventually(
                    lambda: shows(running, waiting), what=f"{running} running, {waiting} waiting"
                )
                if REPORTS_KV[engine]:
                    assert 0 < busy[KV] <= 1
                else:
                    assert KV not in busy
            finally:
                for call in calls:
                    call.cancel()

        await eventually(lambda: shows(0, 0), what="the gauges back at idle")

        # A stopped engine is not an idle one: its gauges disappear rather than read zero.
        await asyncio.to_thread(stack.sim.stop)

        async def gone() -> bool:
            return not await signals(http, url, engine, stack.model)

        await eventually(gone, what="no series once the engine is gone")
