"""A real OTLP/gRPC trace receiver, in the test process: services export to it as to a collector."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.support.polling import TIMEOUT_S, NotYet, eventually
from tests.support.processes import free_port

#: OTLP's SpanKind of a span that handled an incoming request.
SPAN_KIND_SERVER = 2


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]


def _value(v: Any) -> Any:
    field = v.WhichOneof("value")
    if field == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, field) if field else None


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        ExportedSpan(
                            service=str(resource.get("service.name", "")),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpCollector:
    """`async with OtlpCollector() as c:` then point services at `c.env`."""

    def __init__(self) -> None:
        self.port = free_port()
        self._receiver = _Receiver()
        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self._receiver, self._server)  # type: ignore[no-untyped-call]
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")

    @property
    def env(self) -> dict[str, str]:
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }

    @property
    def spans(self) -> list[ExportedSpan]:
        return list(self._receiver.spans)

    def trace(self, trace_id: str) -> Iterator[ExportedSpan]:
        return (s for s in self._receiver.spans if s.trace_id == trace_id)

    async def wait_for(
        self, trace_id: str, services: set[str], within_s: float = TIMEOUT_S
    ) -> list[ExportedSpan]:
        """The spans of `trace_id` once every service in `services` has exported its server
        span of it. A span is exported when it ends and a server span ends after its
        children, which the same exporter queued before it: so by then every span of that
        service in the trace has arrived (no grace period to guess)."""

        def servers_in() -> bool:
            done = {s.service for s in self.trace(trace_id) if s.kind == SPAN_KIND_SERVER}
            return services <= done

        try:
            await eventually(servers_in, within_s=within_s, what=f"server spans of {services}")
        except NotYet as exc:
            raise AssertionError(f"{exc}; got {self.spans[-10:]}") from None
        return list(self.trace(trace_id))

    async def __aenter__(self) -> OtlpCollector:
        await self._server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.stop(None)
