"""Trace context without instrumentation, for a process that exports no spans
(`telemetry.Tracing.IDS`).

The OpenTelemetry instrumentations build every span's attributes, wrap each ASGI `send`
and run every gRPC call through an interceptor task — work that buys nothing when no span
is exported. What still matters then is the context: a trace id in every log line, and
`traceparent` to the next hop with a new span id under the caller's trace and its sampling
flag, so that a service downstream which does export still joins the caller's trace. This
module does only that: a non-recording span per call served (`serving`, or the ASGI
middleware), and a child span id for each call made (`outgoing`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

#: The headers (gRPC metadata keys) W3C trace context and baggage travel in.
CARRIER_KEYS = frozenset({"traceparent", "tracestate", "baggage"})
_ASGI_KEYS = frozenset(k.encode() for k in CARRIER_KEYS)
_ids = RandomIdGenerator()


def _child_of(parent: SpanContext) -> NonRecordingSpan:
    """A new span id under `parent` (its trace, flags and state), or a new trace."""
    if parent.is_valid:
        return NonRecordingSpan(
            SpanContext(
                parent.trace_id,
                _ids.generate_span_id(),
                is_remote=False,
                trace_flags=parent.trace_flags,
                trace_state=parent.trace_state,
            )
        )
    return NonRecordingSpan(
        SpanContext(
            _ids.generate_trace_id(),
            _ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.DEFAULT),
        )
    )


@contextlib.contextmanager
def serving(carrier: Mapping[str, str]) -> Iterator[trace.Span]:
    """The span of one call served, current inside the block: under the caller's trace
    when `carrier` (its headers or metadata, lower-case keys) holds one, else a new trace."""
    parent = propagate.extract(carrier) if carrier else None
    span = _child_of(trace.get_current_span(parent).get_span_context())
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    try:
        yield span
    finally:
        otel_context.detach(token)


def outgoing() -> dict[str, str]:
    """The trace headers of a call made now: a new span id under the current span."""
    carrier: dict[str, str] = {}
    span = _child_of(trace.get_current_span().get_span_context())
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def carrier_of(metadata: Iterable[tuple[str, Any]] | None) -> dict[str, str]:
    """The trace keys of gRPC invocation metadata (or any key/value pairs)."""
    return {k: v for k, v in metadata or () if k in CARRIER_KEYS and isinstance(v, str)}


class TraceContextMiddleware:
    """ASGI: every HTTP request runs inside `serving` of its own trace headers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _ASGI_KEYS
        }
        with serving(carrier):
            await self.app(scope, receive, send)
