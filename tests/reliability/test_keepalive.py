"""Calls that stay silent for a long time survive the edge's keepalive pings.

The edge pings every adapter connection (EDGE_ADAPTER_KEEPALIVE_S). With gRPC's default
server policy an adapter accepted one ping per 5 minutes without data, struck the rest,
and after two strikes answered GOAWAY "too_many_pings", which killed every call on the
connection: in production (pings every 10 s), any call silent for ~30 s. Here the edge
pings every second (gRPC clients never ping more often) and the engine is silent for
six between two tokens; the adapter accepts pings every half second, as the documented
relation between the two settings asks (adapter's minimum <= edge's interval).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.reliability.helpers import chat, read_stream
from tests.support.edge import Edge, start_edge
from tests.support.stacks import Stack, options, start_stack

SILENCE_S = 6.0  # between the two tokens of each answer: six keepalive intervals
KEEPALIVE = {"EDGE_ADAPTER_KEEPALIVE_S": "1", "EDGE_ADAPTER_KEEPALIVE_TIMEOUT_S": "20"}
ADAPTER = {"ADAPTER_KEEPALIVE_MIN_PING_INTERVAL_S": "0.5"}
WATCH_LOSSES = "switchyard_edge_endpoint_watch_losses_total"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Stack, Edge]]:
    log_dir = tmp_path_factory.mktemp("keepalive")
    opts = options(ttft_s=0.01, itl_s=SILENCE_S)
    engine = await asyncio.to_thread(start_stack, "vllm", log_dir, opts, adapter_env=ADAPTER)
    try:
        edge = await asyncio.to_thread(
            start_edge, log_dir, {"vllm": [engine.address]}, env=KEEPALIVE
        )
    except BaseException:
        await asyncio.to_thread(engine.stop)
        raise
    try:
        yield engine, edge
    finally:
        await asyncio.to_thread(edge.stop)
        await asyncio.to_thread(engine.stop)


async def test_a_stream_and_a_unary_call_silent_for_many_pings_complete(
    stack: tuple[Stack, Edge],
) -> None:
    engine, edge = stack
    async with httpx.AsyncClient(timeout=60) as client:
        stream, unary = await asyncio.gather(
            read_stream(client, edge, chat(2)),
            client.post(f"{edge.url}/v1/chat/completions", json=chat(2), headers=edge.auth()),
        )
    assert stream.status == 200
    assert stream.error is None, f"the stream died: {stream.error}"
    assert (stream.done, stream.finish_reason) == (True, "length")
    assert unary.status_code == 200, unary.text
    assert unary.json()["usage"]["completion_tokens"] == 2

    samples = await edge.metrics()
    assert sum(v for (name, _), v in samples.items() if name == WATCH_LOSSES) == 0
    for service in (edge.service, engine.adapter):
        log = service.log_path.read_text(errors="replace")
        assert "too_many_pings" not in log, f"{service.name} saw a GOAWAY"
