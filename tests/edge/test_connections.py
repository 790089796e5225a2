"""Connection limits, with real sockets and shortened limits: idle, slow and oversized
clients are closed; the edge's memory does not grow with what they send; a connection
past the limit is closed at once; a long, slow SSE stream is never cut."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest

from tests.support.edge import Edge, start_edge
from tests.support.polling import eventually
from tests.support.stacks import Stack, options, start_stack

LIMITS = {
    "EDGE_HEADER_TIMEOUT_S": "1",
    "EDGE_BODY_TIMEOUT_S": "1",
    "EDGE_KEEPALIVE_TIMEOUT_S": "1",
    "EDGE_MAX_HEADER_BYTES": "8192",
}
#: Gaps between tokens longer than every limit above.
SLOW_ITL_S = 1.5


@pytest.fixture(scope="module")
def slow_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack("sglang", tmp_path_factory.mktemp("slow"), options(itl_s=SLOW_ITL_S))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def strict(
    engines: dict[str, Stack], slow_engine: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Edge]:
    """An edge with one-second limits: demo-vllm is fast, demo-sglang slow."""
    endpoints = {"vllm": [engines["vllm"].address], "sglang": [slow_engine.address]}
    edge = start_edge(tmp_path_factory.mktemp("strict"), endpoints, env=LIMITS)
    try:
        yield edge
    finally:
        edge.stop()


@pytest.fixture(scope="module")
def few(engines: dict[str, Stack], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """An edge taking five connections at a time (and patient with them)."""
    env = {"EDGE_MAX_CONNECTIONS": "5", "EDGE_HEADER_TIMEOUT_S": "600"}
    edge = start_edge(tmp_path_factory.mktemp("few"), {"vllm": [engines["vllm"].address]}, env=env)
    try:
        yield edge
    finally:
        edge.stop()


@contextlib.asynccontextmanager
async def connection(
    edge: Edge,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.service.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def until_closed(reader: asyncio.StreamReader, within_s: float = 30.0) -> bytes:
    """What the edge sent until it closed the connection (a reset counts as closed)."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        async with asyncio.timeout(within_s):
            while chunk := await reader.read(65536):
                received += chunk
    return received


async def closed_for(edge: Edge, reason: str) -> float:
    samples = await edge.metrics()
    return samples.get(("switchyard_edge_connections_closed_total", (("reason", reason),)), 0.0)


async def open_connections(edge: Edge) -> float:
    return (await edge.metrics()).get(("switchyard_edge_open_connections", ()), 0.0)


def _log_records(edge: Edge, offset: int) -> list[dict[str, Any]]:
    text = edge.service.log_path.read_bytes()[offset:].decode(errors="replace")
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]


def _log_size(path: Path) -> int:
    return path.stat().st_size


async def test_a_connection_that_sends_nothing_is_closed(strict: Edge) -> None:
    before = await closed_for(strict, "header_timeout")
    async with connection(strict) as (reader, _):
        assert await until_closed(reader) == b""  # nothing to answer: just closed
    assert await closed_for(strict, "header_timeout") == before + 1


async def test_a_slowloris_connection_gets_408_and_is_closed(strict: Edge) -> None:
    before = await closed_for(strict, "header_timeout")
    async with connection(strict) as (reader, writer):
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: edge\r\n")

        async def drip() -> None:  # a header line at a time, never the end of the headers
            with contextlib.suppress(OSError):
                for i in range(1000):
                    writer.write(b"X-Slow-%d: still here\r\n" % i)
                    await writer.drain()
                    await asyncio.sleep(0.2)

        dripping = asyncio.create_task(drip())
        try:
            answer = await until_closed(reader)
        finally:
            dripping.cancel()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
    assert await closed_for(strict, "header_timeout") == before + 1


async def test_a_slow_body_is_closed_and_recorded_once_as_the_client_leaving(
    strict: Edge,
) -> None:
    request_id = uuid.uuid4().hex
    offset = _log_size(strict.service.log_path)
    before = await closed_for(strict, "body_timeout")
    async with connection(strict) as (reader, writer):
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: edge\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n"
            + f"Authorization: Bearer {strict.keys['full']}\r\nX-Request-Id: {request_id}\r\n\r\n".encode()
            + b'{"model": "demo-vllm", '
        )

        async def drip() -> None:
            with contextlib.suppress(OSError):
                for _ in range(1000):
                    writer.write(b" ")
                    await writer.drain()
                    await asyncio.sleep(0.2)

        dripping = asyncio.create_task(drip())
        try:
            assert await until_closed(reader) == b""
        finally:
            dripping.cancel()
    assert await closed_for(strict, "body_timeout") == before + 1

    def records() -> list[dict[str, Any]]:
        return [r for r in _log_records(strict, offset) if r.get("request_id") == request_id]

    (record,) = await eventually(records, what="the request's record")
    assert (record["level"], record["status"], record["client_disconnected"]) == ("info", 499, True)
    assert not [r for r in _log_records(strict, offset) if r["level"] in ("error", "critical")]


async def test_oversized_headers_are_refused_without_the_memory_growing(strict: Edge) -> None:
    """Three clients each send a 32 MiB Authorization header: each gets 431 after at most
    a read past the limit, and the edge's memory does not follow what they sent."""
    process = psutil.Process(strict.service.process.pid)
    rss_before = process.memory_info().rss
    before = await closed_for(strict, "header_too_large")
    huge = 32 * 1024 * 1024
    chunk = b"a" * (64 * 1024)

    async def send_huge() -> bytes:
        async with connection(strict) as (reader, writer):
            writer.write(b"GET /v1/models HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer ")
            with contextlib.suppress(OSError):
                for _ in range(huge // len(chunk)):
                    writer.write(chunk)
                    await writer.drain()
            return await until_closed(reader)

    answers = await asyncio.gather(*(send_huge() for _ in range(3)))
    grown = process.memory_info().rss - rss_before
    assert await closed_for(strict, "header_too_large") == before + 3
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert grown < 16 * 1024 * 1024, f"the edge grew by {grown / 2**20:.1f} MiB"


async def test_a_kept_alive_connection_serves_requests_then_closes_when_idle(
    strict: Edge,
) -> None:
    async with connection(strict) as (reader, writer):
        for _ in range(3):  # each request re-arms the header limit; none is refused
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        assert await until_closed(reader) == b""  # idle past the keep-alive timeout


async def test_a_long_slow_stream_outlives_every_limit(strict: Edge) -> None:
    """Four tokens, 1.5 s apart: longer than the header, body and keep-alive limits, each
    gap and all together."""
    body = {
        "model": "demo-sglang",
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": 4,
        "ignore_eos": True,
        "stream": True,
    }
    chunks: list[dict[str, Any]] = []
    done = False
    async with (
        httpx.AsyncClient(base_url=strict.url, timeout=60) as client,
        client.stream("POST", "/v1/chat/completions", json=body, headers=strict.auth()) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunks.append(orjson.loads(line.removeprefix("data: ")))
    assert done
    assert not [c for c in chunks if "error" in c]
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) == 4


async def test_a_connection_past_the_limit_is_closed_at_once(few: Edge) -> None:
    async with contextlib.AsyncExitStack() as held:
        for _ in range(5):
            await held.enter_async_context(connection(few))
        await eventually(lambda: _is(open_connections(few), 5.0), what="five connections open")
        async with connection(few) as (reader, _):
            assert await until_closed(reader) == b""
        assert await closed_for(few, "connection_limit") == 1
    # Once some close, new ones are served again.
    await eventually(lambda: _is(open_connections(few), 0.0), what="the connections gone")
    async with httpx.AsyncClient(base_url=few.url) as client:
        assert (await client.get("/healthz")).status_code == 200


async def _is(value: Any, expected: float) -> bool:
    return bool(await value == expected)
