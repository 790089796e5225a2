"""The adapter's own Prometheus metrics (the engine exports its own on its port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LABELS = ("engine", "model")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "switchyard_adapter_requests",
    "Inference RPCs handled, by method and gRPC status code.",
    (*_LABELS, "method", "code"),
)
IN_FLIGHT = Gauge(
    "switchyard_adapter_in_flight_requests", "Inference RPCs being handled now.", _LABELS
)
TIME_TO_FIRST_TOKEN = Histogram(
    "switchyard_adapter_time_to_first_token_seconds",
    "From the RPC's start to the first text sent to the caller.",
    _LABELS,
    buckets=_LATENCY_BUCKETS,
)
DURATION = Histogram(
    "switchyard_adapter_request_duration_seconds",
    "From the RPC's start to its end.",
    (*_LABELS, "method"),
    buckets=_LATENCY_BUCKETS,
)
TOKENS = Counter(
    "switchyard_adapter_tokens",
    "Tokens through the adapter, by kind (prompt or completion).",
    (*_LABELS, "kind"),
)
ENGINE_READY = Gauge(
    "switchyard_adapter_engine_ready", "1 while the engine can generate, else 0.", _LABELS
)
