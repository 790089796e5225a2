"""OpenTelemetry client spans and W3C trace context for `grpc.aio` calls that stay cancellable.

Why not opentelemetry-instrumentation-grpc's aio client interceptor: for unary calls it
awaits the whole call inside the interceptor (to read its status), so cancelling the
caller's await, or the call itself, only cancels the interceptor and the RPC runs on to
the end — a client that goes away would not stop its generation. This interceptor returns
the call at once and ends the span from a separate task, so `call.cancel()` and task
cancellation reach the server as they do without tracing. Attributes follow the OTel RPC
conventions, so the spans read like the contrib ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

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
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *carrier.items())
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
    target: str, skip_services: frozenset[str] = frozenset({"grpc.health.v1.Health"})
) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for `grpc.aio.insecure_channel(target, interceptors=...)`."""
    return [TracingUnaryUnary(target, skip_services), TracingUnaryStream(target, skip_services)]
