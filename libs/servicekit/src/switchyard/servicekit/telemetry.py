"""OpenTelemetry tracing from the standard `OTEL_*` variables.

- `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`: the resource (the service name
  defaults to the component's own name).
- `OTEL_TRACES_EXPORTER`: a comma list of `otlp`, `console`, `none`. Unset, it is `otlp`
  when an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`) and
  `none` otherwise, so a laptop without a collector logs no export errors.
- `OTEL_SDK_DISABLED=true`: no SDK at all (no spans, no propagation).
- `OTEL_EXPORTER_OTLP_*`, `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER*`: read by the SDK itself.

Without an exporter nothing would read the spans, so unless `OTEL_TRACES_SAMPLER` says
otherwise, new traces are not sampled (`parentbased_always_off`). `tracing_mode()` tells the
services what to install: with an exporter (`SPANS`), the OpenTelemetry instrumentations
(server and client spans with their attributes); without one (`IDS`), only
`trace_context` — real trace and span ids, so logs carry trace ids and `traceparent` still
goes downstream with the caller's sampling decision, without the instrumentations' work on
every request (a fifth of a request's CPU in the edge and the adapter, measured by the bench).
"""

from __future__ import annotations

import enum
import os

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

_KNOWN_EXPORTERS = {"otlp", "console", "none"}


class Tracing(enum.Enum):
    """What a process does for traces (`tracing_mode`)."""

    OFF = "off"  # OTEL_SDK_DISABLED: nothing, not even propagation
    IDS = "ids"  # no exporter: trace ids in logs and downstream, no spans recorded
    SPANS = "spans"  # an exporter: the instrumentations record spans


def tracing_mode() -> Tracing:
    """The mode the `OTEL_*` variables ask for (as `configure_tracing` reads them)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Tracing.OFF
    return Tracing.SPANS if _exporter_names() else Tracing.IDS


def _exporter_names() -> list[str]:
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "")
    if not raw.strip():
        has_endpoint = any(
            os.environ.get(k)
            for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        )
        return ["otlp"] if has_endpoint else []
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    unknown = sorted(set(names) - _KNOWN_EXPORTERS)
    if unknown:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER: unsupported exporter(s) {unknown}; use otlp, console or none"
        )
    return [n for n in names if n != "none"]


def _otlp_exporter() -> SpanExporter:
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    )
    if protocol != "grpc":
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: only 'grpc' is supported")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def configure_tracing(service_name: str) -> TracerProvider | None:
    """Install the global tracer provider; returns it (call `shutdown()` at exit), or None if disabled."""
    if tracing_mode() is Tracing.OFF:
        return None
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    exporters = _exporter_names()
    sampler = None  # the SDK reads OTEL_TRACES_SAMPLER itself
    if not exporters and not os.environ.get("OTEL_TRACES_SAMPLER"):
        sampler = ParentBased(ALWAYS_OFF)
    provider = TracerProvider(resource=Resource.create(attributes), sampler=sampler)
    for name in exporters:
        if name == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
        else:
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider
