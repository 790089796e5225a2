"""Client disconnects cancel the generation down to the engine; a dead adapter is an SSE error, not a hang."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import orjson
import pytest

from tests.edge.conftest import settled
from tests.support.edge import Edge
from tests.support.polling import eventually
from tests.support.stacks import Stack

LONG = {"max_tokens": 1000, "ignore_eos": True}


async def _stats(stack: Stack) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        stats: dict[str, Any] = (await client.get(f"{stack.sim_url}/sim/stats")).json()
        return stats


async def _aborted(stack: Stack) -> int:
    aborted: int = (await _stats(stack))["aborted"]
    return aborted


async def _until_aborted(stack: Stack, before: int) -> None:
    async def aborted() -> bool:
        return await _aborted(stack) > before

    await eventually(aborted, what="the engine saw the abort")


@pytest.mark.parametrize("engine", ["vllm", "sglang"])  # engines with ignore_eos (a long stream)
async def test_client_leaving_a_stream_aborts_the_engine(
    edge: Edge, engines: dict[str, Stack], engine: str
) -> None:
    before = await _aborted(engines[engine])
    body = {
        "model": f"demo-{engine}",
        "messages": [{"role": "user", "content": "go"}],
        "stream": True,
        **LONG,
    }
    # The engine holds the stream after its first token until the client leaves: it cannot
    # end on its own first, however slow the machine.
    async with (
        engines[engine].stalled(count=1),
        httpx.AsyncClient() as client,
        client.stream(
            "POST", f"{edge.url}/v1/chat/completions", json=body, headers=edge.auth()
        ) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                break  # some text arrived: leave mid-stream
        await _until_aborted(engines[engine], before)
    await settled(edge, engines)


async def test_client_leaving_a_unary_request_aborts_the_engine(
    edge: Edge, engines: dict[str, Stack]
) -> None:
    vllm = engines["vllm"]
    before = await _stats(vllm)
    body = {"model": "demo-vllm", "prompt": "go", **LONG}
    async with vllm.stalled(count=1), httpx.AsyncClient(timeout=60) as client:
        call = asyncio.create_task(
            client.post(f"{edge.url}/v1/completions", json=body, headers=edge.auth())
        )

        # Leave once the engine works on it, not after a fixed time: a slow machine may
        # not have sent it yet.
        async def at_the_engine() -> bool:
            stats = await _stats(vllm)
            return bool(stats["requests"] > before["requests"] and stats["in_flight"] >= 1)

        await eventually(at_the_engine, what="the request at the engine")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await _until_aborted(vllm, before["aborted"])
    await settled(edge, engines)


async def test_client_leaving_a_stream_before_its_first_token_aborts_the_engine(
    eager_keepalive_edge: Edge, engines: dict[str, Stack]
) -> None:
    # Keep-alives fall due long before this first token, which never comes: none may be
    # written before the response's status (the server refuses it, and the watch on the
    # client died with it, so the client's leaving went unnoticed).
    edge, vllm = eager_keepalive_edge, engines["vllm"]
    before = await _stats(vllm)
    body = {
        "model": "demo-vllm",
        "messages": [{"role": "user", "content": "go"}],
        "stream": True,
        **LONG,
    }
    async with vllm.stalled(count=1, after=0), httpx.AsyncClient(timeout=60) as client:

        async def call() -> int:
            async with client.stream(
                "POST", f"{edge.url}/v1/chat/completions", json=body, headers=edge.auth()
            ) as response:
                return response.status_code

        waiting = asyncio.create_task(call())

        async def at_the_engine() -> bool:
            stats = await _stats(vllm)
            return bool(stats["requests"] > before["requests"] and stats["in_flight"] >= 1)

        await eventually(at_the_engine, what="the request at the engine")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await _until_aborted(vllm, before["aborted"])
    await settled(edge, engines)


async def test_client_leaving_mid_upload_is_one_info_record_and_no_error(edge: Edge) -> None:
    request_id = uuid.uuid4().hex
    log = edge.service.log_path
    offset = log.stat().st_size
    before = await _requests_with_status(edge, "499")
    _, writer = await asyncio.open_connection("127.0.0.1", edge.service.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n"
        + f"Authorization: Bearer {edge.keys['full']}\r\nX-Request-Id: {request_id}\r\n\r\n".encode()
        + b'{"model": "demo-vllm", "messages": ['
    )
    await writer.drain()
    writer.close()  # gone before the body's end
    await writer.wait_closed()

    def records() -> list[dict[str, Any]]:
        text = log.read_bytes()[offset:].decode(errors="replace")
        return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]

    (record,) = await eventually(
        lambda: [r for r in records() if r.get("request_id") == request_id],
        what="the request's record",
    )
    assert (record["level"], record["status"], record["client_disconnected"]) == ("info", 499, True)
    assert await _requests_with_status(edge, "499") == before + 1
    assert not [r for r in records() if r["level"] in ("error", "critical")]


async def _requests_with_status(edge: Edge, status: str) -> float:
    return sum(
        value
        for (name, labels), value in (await edge.metrics()).items()
        if name == "switchyard_edge_requests_total" and ("status", status) in labels
    )
