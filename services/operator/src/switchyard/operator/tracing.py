"""The operator's spans: one per reconcile of a ModelBackend and one per scaling decision.

A scaling decision's span is the parent of the `GetLoad` calls it makes (their client spans
carry its trace to the adapters), so a trace shows what load the decision saw and from
which replicas. `configure_tracing` (servicekit) sets up the export from `OTEL_*`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace

from switchyard.operator.load import BackendRef
from switchyard.operator.scaling import Decision

#: The operator's OpenTelemetry service name (and the component's name everywhere).
COMPONENT = "operator"

_tracer = trace.get_tracer("switchyard.operator")


@contextmanager
def backend_span(name: str, ref: BackendRef) -> Iterator[trace.Span]:
    """A span about one ModelBackend; an exception that leaves it marks it failed."""
    attributes = {"k8s.namespace.name": ref.namespace, "switchyard.model_backend": ref.name}
    with _tracer.start_as_current_span(name, attributes=attributes) as span:
        yield span


def record_decision(span: trace.Span, decision: Decision | None) -> None:
    if decision is None:  # nothing to scale (not created yet, invalid, being deleted)
        span.set_attribute("switchyard.scaling.skipped", True)
        return
    span.set_attributes(
        {
            "switchyard.scaling.desired_replicas": decision.desired,
            "switchyard.scaling.demand_replicas": decision.demand,
            "switchyard.scaling.reason": decision.reason,
        }
    )


def record_failure(span: trace.Span, error: BaseException) -> None:
    """An error that is handled (logged, retried later), so it does not leave the span."""
    span.record_exception(error)
    span.set_status(trace.StatusCode.ERROR, repr(error))
