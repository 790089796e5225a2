"""Without an exporter, a grpc.aio server runs each call in its caller's trace (`TraceIds`):
unary and streaming handlers see the caller's trace id under a span id of their own, and
a stream's handler still ends in the RPC's task when the client cancels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace

from switchyard.servicekit.grpc_tracing import (
    call_metadata,
    client_interceptors,
    server_interceptors,
)
from switchyard.servicekit.telemetry import Tracing

SERVICE = "test.Echo"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


def _ids() -> tuple[str, str]:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


class _Server:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []  # (method, trace id, span id)
        self.stream_ended = asyncio.Event()

    def handlers(self) -> grpc.GenericRpcHandler:
        async def unary(request: bytes, context: Any) -> bytes:
            self.seen.append(("unary", *_ids()))
            return request

        async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
            try:
                for n in range(1000):
                    self.seen.append(("stream", *_ids()))
                    yield bytes([n % 256])
                    await asyncio.sleep(0.01 if n else 0)
            finally:
                self.stream_ended.set()

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(unary),
                "Stream": grpc.unary_stream_rpc_method_handler(stream),
            },
        )


@pytest.fixture
async def served() -> AsyncIterator[tuple[_Server, grpc.aio.Channel]]:
    state = _Server()
    server = grpc.aio.server(interceptors=server_interceptors(SERVICE, mode=Tracing.IDS))
    server.add_generic_rpc_handlers((state.handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield state, channel
    finally:
        await channel.close()
        await server.stop(0)


def test_without_spans_a_call_carries_its_trace_itself() -> None:
    assert client_interceptors("adapter:50051", mode=Tracing.IDS) is None
    assert client_interceptors("adapter:50051", mode=Tracing.OFF) is None
    assert len(client_interceptors("adapter:50051", mode=Tracing.SPANS) or []) == 2
    # No interceptor: the call's own metadata has the trace (a new child span id each call).
    first, second = dict(call_metadata(Tracing.IDS) or ()), dict(call_metadata(Tracing.IDS) or ())
    assert first["traceparent"] != second["traceparent"]
    assert call_metadata(Tracing.SPANS) is None  # the interceptor adds it
    assert call_metadata(Tracing.OFF) is None


async def test_unary_and_stream_calls_run_in_the_callers_trace(
    served: tuple[_Server, grpc.aio.Channel],
) -> None:
    state, channel = served
    metadata = (("traceparent", TRACEPARENT),)
    unary: Any = channel.unary_unary(f"/{SERVICE}/Unary")
    assert await unary(b"x", metadata=metadata) == b"x"
    stream: Any = channel.unary_stream(f"/{SERVICE}/Stream")
    call = stream(b"x", metadata=metadata)
    got = [await call.read() for _ in range(3)]
    assert got == [b"\x00", b"\x01", b"\x02"]
    call.cancel()
    # The client left mid-stream: the handler's own cleanup runs (in its task, at once).
    await asyncio.wait_for(state.stream_ended.wait(), timeout=30)

    unary_seen = [s for s in state.seen if s[0] == "unary"]
    stream_seen = [s for s in state.seen if s[0] == "stream"]
    assert len(unary_seen) == 1
    assert len(stream_seen) >= 3
    for _, trace_id, span_id in (*unary_seen, *stream_seen):
        assert trace_id == TRACE_ID
        assert span_id != CALLER_SPAN
    assert len({s[2] for s in stream_seen}) == 1  # one span for the whole stream
    assert unary_seen[0][2] != stream_seen[0][2]  # and one per call


async def test_a_call_without_a_trace_gets_a_new_one(
    served: tuple[_Server, grpc.aio.Channel],
) -> None:
    state, channel = served
    unary: Any = channel.unary_unary(f"/{SERVICE}/Unary")
    await unary(b"a")
    await unary(b"b")
    trace_ids = [s[1] for s in state.seen]
    assert len(set(trace_ids)) == 2
    assert "0" * 32 not in trace_ids
