"""OpenTelemetry for `grpc.aio`: client spans that stay cancellable, and server spans whose
streams end in their own task.

Client side — why not opentelemetry-instrumentation-grpc's aio client interceptor: for unary calls it
awaits the whole call inside the interceptor (to read its status), so cancelling the
caller's await, or the call itself, only cancels the interceptor and the RPC runs on to
the end — a client that goes away would not stop its generation. This interceptor returns
the call at once and ends the span from a separate task, so `call.cancel()` and task
cancellation reach the server as they do without tracing. Attributes follow the OTel RPC
conventions, so the spans read like the contrib ones.

Server side — contrib's aio server interceptor, inside `EndStreamsInTheirTask`: grpc.aio
consumes a streaming handler's async generator with a bare `async for`, so when the RPC's
task is cancelled while a message is being sent (the client left), the generator is left
suspended and later closed by the event loop's finalizer, in another task and another
contextvars Context. The contrib interceptor holds the trace context and the span attached
across the whole stream; detaching them there fails ("Failed to detach context", an ERROR
with a traceback for every stream a client cancels), and the handler's own cleanup runs
late. (grpc/grpc#42295 proposes the same fix inside grpc.)

Without an exporter (`Tracing.IDS`) neither side runs an instrumentation: the server
interceptor `TraceIds` serves each call inside `trace_context.serving`, and clients send
`call_metadata(mode)` with each call (a channel then takes no interceptor: grpc.aio runs
every intercepted call through an extra task).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import types
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.trace import SpanKind, Status, StatusCode

from switchyard.servicekit import trace_context
from switchyard.servicekit.telemetry import Tracing, tracing_mode

_tracer = trace.get_tracer("switchyard.grpc.client")


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


class _Tracing:
    def __init__(self, target: str, skip_services: frozenset[str]) -> None:
        host, _, port = target.rpartition(":")
        self._address: dict[str, str | int] = {
            "server.address": host or target,
            "server.port": int(port) if port.isdigit() else 0,
        }
        self._skip = skip_services
        self._ending: set[asyncio.Task[None]] = set()

    def _start(
        self, details: grpc.aio.ClientCallDetails
    ) -> tuple[trace.Span | None, grpc.aio.ClientCallDetails]:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        service, name = _split(method)
        if service in self._skip:
            return None, details
        span = _tracer.start_span(
            f"{service}/{name}",
            kind=SpanKind.CLIENT,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": name,
                **self._address,
            },
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        # This span's context replaces any the caller put in the call's own metadata.
        kept = (m for m in details.metadata or () if m[0] not in trace_context.CARRIER_KEYS)
        metadata = grpc.aio.Metadata(*kept, *carrier.items())
        return span, grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    def _end_when_done(self, span: trace.Span, call: Any) -> None:
        async def end() -> None:
            try:
                code: grpc.StatusCode = await call.code()
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code != grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()

        task = asyncio.create_task(end())
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)


class TracingUnaryUnary(_Tracing, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        span, details = self._start(client_call_details)
        call = await continuation(details, request)
        if span is not None:
            self._end_when_done(span, call)
        return call


class TracingUnaryStream(_Tracing, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        span, details = self._start(client_call_details)
        call = await continuation(details, request)
        if span is not None:
            self._end_when_done(span, call)
        return call


def client_interceptors(
    target: str,
    skip_services: frozenset[str] = frozenset({"grpc.health.v1.Health"}),
    mode: Tracing | None = None,
) -> list[grpc.aio.ClientInterceptor] | None:
    """Interceptors for `grpc.aio.insecure_channel(target, interceptors=...)`: client spans
        when spans are exported, else none (send `trace_context.outgoing()` with each call
    where tracing is not off)."""
    if (mode or tracing_mode()) is not Tracing.SPANS:
        return None
    return [TracingUnaryUnary(target, skip_services), TracingUnaryStream(target, skip_services)]


def call_metadata(mode: Tracing) -> tuple[tuple[str, str], ...] | None:
    """The metadata a call on a channel made with `client_interceptors(..., mode=mode)`
    carries itself: its trace context where no interceptor adds it (`IDS`), else none."""
    return tuple(trace_context.outgoing().items()) if mode is Tracing.IDS else None


# Strings: grpc's classes are generic only in their stubs.
_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
#: What a server interceptor calls for the handler of a call.
_Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]]"


def _written(responses_of: Any) -> Callable[[Any, Any], Awaitable[None]]:
    """The streaming handler `responses_of`, through grpc's reader/writer API: a coroutine
    that writes each message, so its generator always ends in the RPC's own task."""

    async def write_all(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        responses: AsyncGenerator[Any, None] = responses_of(request, context)
        try:
            async for response in responses:
                await context.write(response)
        except asyncio.CancelledError:
            if isinstance(responses, types.AsyncGeneratorType) and responses.ag_frame:
                await _cancel_where_it_waits(responses)
            raise
        finally:
            await responses.aclose()

    return write_all


async def _cancel_where_it_waits(responses: AsyncGenerator[Any, None]) -> None:
    """The RPC was cancelled while a message was being written, so the generators (the
    handler's, inside contrib's) wait at a `yield`, where they would only see a
    GeneratorExit: resume them and cancel the task again at their first wait (the handler
    waiting for its engine), so the cancellation goes through them as it would have a
    moment later. What they produce meanwhile is dropped: the client has gone."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().call_soon(task.cancel)
    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
        while True:
            await anext(responses)


class EndStreamsInTheirTask(grpc.aio.ServerInterceptor):
    """Serves async-generator streaming handlers through `_written` (place it first)."""

    async def intercept_service(
        self, continuation: _Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> _Handler | None:
        handler = await continuation(handler_call_details)
        # Server-streaming handlers written as async generators (the contract has no
        # client-streaming RPC); a coroutine already writes through its context.
        if (
            handler is None
            or handler.request_streaming
            or not handler.response_streaming
            or not inspect.isasyncgenfunction(handler.unary_stream)
        ):
            return handler
        return grpc.unary_stream_rpc_method_handler(
            _written(handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class TraceIds(grpc.aio.ServerInterceptor):
    """Serves each call of `service_name` inside `trace_context.serving` of its metadata
    (place it before `EndStreamsInTheirTask`, whose streaming handlers are coroutines)."""

    def __init__(self, service_name: str) -> None:
        self._prefix = f"/{service_name}/"

    async def intercept_service(
        self, continuation: _Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> _Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.request_streaming or not method.startswith(self._prefix):
            return handler
        carrier = trace_context.carrier_of(handler_call_details.invocation_metadata)
        if handler.response_streaming:
            behaviour: Any = handler.unary_stream
            if inspect.isasyncgenfunction(behaviour):
                return handler  # not through EndStreamsInTheirTask: left as it is
            return grpc.unary_stream_rpc_method_handler(
                _serving(behaviour, carrier),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            _serving(handler.unary_unary, carrier),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _serving(behaviour: Any, carrier: dict[str, str]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def serve(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        with trace_context.serving(carrier):
            return await behaviour(request, context)

    return serve


def server_interceptors(
    service_name: str, mode: Tracing | None = None
) -> list[grpc.aio.ServerInterceptor]:
    """Interceptors for `grpc.aio.server(interceptors=...)`, streams ended in their own
    task: with spans exported, OpenTelemetry server spans for `service_name`'s RPCs
    (contrib's interceptor; health checks and reflection are noise in traces); without,
    only their trace context (`TraceIds`)."""
    mode = mode or tracing_mode()
    if mode is Tracing.SPANS:
        return [
            EndStreamsInTheirTask(),
            aio_server_interceptor(filter_=filters.service_name(service_name)),  # type: ignore[no-untyped-call]
        ]
    if mode is Tracing.IDS:
        return [TraceIds(service_name), EndStreamsInTheirTask()]
    return [EndStreamsInTheirTask()]
