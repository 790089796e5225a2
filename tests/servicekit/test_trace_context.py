"""Trace context without instrumentation: the caller's trace in, a child span id out."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace

from switchyard.servicekit import telemetry, trace_context

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


def _ids() -> tuple[str, str, int]:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"), int(ctx.trace_flags)


@pytest.mark.parametrize("flags", ["01", "00"])
def test_serving_joins_the_callers_trace_with_its_own_span_id(flags: str) -> None:
    before = _ids()
    with trace_context.serving({"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-{flags}"}) as span:
        trace_id, span_id, sampled = _ids()
        assert not span.is_recording()
    assert trace_id == TRACE_ID
    assert span_id != CALLER_SPAN
    assert sampled == int(flags, 16)  # the caller's decision goes on downstream
    assert _ids() == before  # detached when the call ends


def test_serving_without_a_caller_starts_a_trace() -> None:
    with trace_context.serving({}):
        first = _ids()
    with trace_context.serving({"traceparent": "not a traceparent"}):
        second = _ids()
    assert first[0] != "0" * 32
    assert second[0] != "0" * 32
    assert first[0] != second[0]
    assert first[2] == second[2] == 0  # not sampled: nobody asked


def test_outgoing_is_a_child_of_the_current_span() -> None:
    with trace_context.serving({"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}):
        _, served, _ = _ids()
        first = trace_context.outgoing()["traceparent"].split("-")
        second = trace_context.outgoing()["traceparent"].split("-")
    assert first[1] == second[1] == TRACE_ID
    assert first[3] == "01"
    assert len({first[2], second[2], served, CALLER_SPAN}) == 4  # a new span id per call


def test_the_carrier_keeps_only_trace_keys() -> None:
    metadata = [
        ("traceparent", "00-a-b-01"),
        ("authorization", "Bearer secret"),
        ("tracestate", "k=v"),
        ("bin-bin", b"\x00"),
    ]
    assert trace_context.carrier_of(metadata) == {"traceparent": "00-a-b-01", "tracestate": "k=v"}
    assert trace_context.carrier_of(None) == {}


async def test_the_asgi_middleware_serves_each_request_in_its_callers_trace() -> None:
    seen: list[tuple[str, str, int]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(_ids())

    middleware = trace_context.TraceContextMiddleware(app)
    headers = [(b"host", b"edge"), (b"traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01".encode())]
    await middleware({"type": "http", "headers": headers}, None, None)
    await middleware({"type": "http", "headers": []}, None, None)
    await middleware({"type": "lifespan"}, None, None)  # passed through untouched
    assert seen[0][0] == TRACE_ID
    assert seen[0][1] != CALLER_SPAN
    assert seen[1][0] not in (TRACE_ID, "0" * 32)
    assert seen[2][0] == "0" * 32


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, telemetry.Tracing.IDS),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, telemetry.Tracing.SPANS),
        ({"OTEL_TRACES_EXPORTER": "console"}, telemetry.Tracing.SPANS),
        ({"OTEL_TRACES_EXPORTER": "none"}, telemetry.Tracing.IDS),
        (
            {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"},
            telemetry.Tracing.OFF,
        ),
    ],
)
def test_the_mode_follows_the_otel_variables(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], mode: telemetry.Tracing
) -> None:
    for var in (
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert telemetry.tracing_mode() is mode
