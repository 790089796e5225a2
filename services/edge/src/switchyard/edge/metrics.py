"""The edge's Prometheus metrics (names are what dashboards and alerts use: keep them stable).

They are served on their own port (`EDGE_METRICS_PORT`), never the public one: they name
every model and its traffic. With several uvicorn workers, prometheus_client's
multiprocess mode aggregates them (`PROMETHEUS_MULTIPROC_DIR`, set by `switchyard.edge.main`
before the workers start), and `serve` runs in uvicorn's supervisor process.
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TOKEN_GAP = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)

REQUESTS = Counter(
    "switchyard_edge_requests",
    "Requests answered, by model, API route and HTTP status.",
    ("model", "route", "status"),
)
ERRORS = Counter(
    "switchyard_edge_errors",
    "Requests that failed, by model and error kind (rate_limited, backend_unavailable, ...).",
    ("model", "kind"),
)
REFUSALS = Counter(
    "switchyard_edge_refusals",
    "Requests refused before reaching a backend, by reason (rate limits, queue, no backend).",
    ("model", "reason"),
)
TIME_TO_FIRST_TOKEN = Histogram(
    "switchyard_edge_time_to_first_token_seconds",
    "From the request's arrival to its first generated text (streams) or its body (unary).",
    ("model",),
    buckets=_LATENCY,
)
INTER_TOKEN_LATENCY = Histogram(
    "switchyard_edge_inter_token_latency_seconds",
    "Time between consecutive chunks relayed to a streaming client.",
    ("model",),
    buckets=_TOKEN_GAP,
)
REQUEST_DURATION = Histogram(
    "switchyard_edge_request_duration_seconds",
    "From the request's arrival to its last byte.",
    ("model", "route"),
    buckets=_LATENCY,
)
QUEUE_WAIT = Histogram(
    "switchyard_edge_queue_wait_seconds",
    "Time spent waiting for admission.",
    ("model",),
    buckets=_LATENCY,
)
TOKENS = Counter(
    "switchyard_edge_tokens",
    "Tokens through the edge, by model and kind (prompt or completion).",
    ("model", "kind"),
)
IN_FLIGHT = Gauge(
    "switchyard_edge_in_flight_requests",
    "Requests being served now.",
    ("model",),
    multiprocess_mode="livesum",
)
QUEUED = Gauge(
    "switchyard_edge_queued_requests",
    "Requests waiting for admission now (the model has a ready replica but is saturated).",
    ("model",),
    multiprocess_mode="livesum",
)
# Hold on wake: a model with no ready replica (at zero, or loading) holds its requests.
HELD = Gauge(
    "switchyard_edge_held_requests",
    "Requests held now for a model with no ready replica (waking from zero or loading).",
    ("model",),
    multiprocess_mode="livesum",
)
HOLD_TIME = Histogram(
    "switchyard_edge_hold_seconds",
    "Time a request was held for a replica, by outcome (served, timeout, full, left, gone: "
    "the model was deleted meanwhile).",
    ("model", "outcome"),
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
WAKES = Counter(
    "switchyard_edge_wake_signals",
    "Wake signals (demand annotations) this edge sent for a model with no ready replica; "
    "coalesced across edge replicas, so the sum over replicas counts wakes asked for.",
    ("model",),
)
WAKES_UNCOALESCED = Counter(
    "switchyard_edge_wake_uncoalesced",
    "Wake signals sent without coalescing across edge replicas because Redis failed.",
)
RETRIES = Counter(
    "switchyard_edge_backend_retries",
    "Requests sent to another endpoint after one failed before the first byte.",
    ("model",),
)
ENDPOINTS_READY = Gauge(
    "switchyard_edge_backend_ready_endpoints",
    "Adapter endpoints of a model that are SERVING.",
    ("model",),
    multiprocess_mode="livemax",
)
CACHE_LOOKUPS = Counter(
    "switchyard_edge_cache_lookups",
    "Response cache lookups, by model, API route and result (hit, miss).",
    ("model", "route", "result"),
)
CACHE_SAVED_TOKENS = Counter(
    "switchyard_edge_cache_saved_tokens",
    "Tokens a cache hit answered without an engine, by model and kind (prompt or completion).",
    ("model", "kind"),
)
CACHE_ERRORS = Counter(
    "switchyard_edge_cache_errors",
    "Response cache operations that failed (Redis unreachable or slow: a miss, never an "
    "error to the client), by operation (get, put).",
    ("operation",),
)

CHECKS = Counter(
    "switchyard_edge_request_checks",
    "Expensive request checks run off the event loop, by check (json_schema) and result.",
    ("check", "result"),
)
OPEN_CONNECTIONS = Gauge(
    "switchyard_edge_open_connections",
    "HTTP connections open now.",
    multiprocess_mode="livesum",
)
CONNECTIONS_CLOSED = Counter(
    "switchyard_edge_connections_closed",
    "Connections the edge closed on a limit, by reason (header_too_large, header_timeout, "
    "body_timeout, connection_limit).",
    ("reason",),
)

# Usage per tenant and model (`switchyard.edge.usage`). Bounded labels: tenants come from
# the keys file and models are served names ("(none)" when unresolved); never key names.
TENANT_REQUESTS = Counter(
    "switchyard_edge_tenant_requests",
    "Requests by tenant, served model, API and status class (2xx, 4xx, 5xx, cancelled).",
    ("tenant", "model", "api", "status_class"),
)
TENANT_INPUT_TOKENS = Counter(
    "switchyard_edge_tenant_input_tokens",
    "Input (prompt) tokens by tenant and served model, as the request log line has them.",
    ("tenant", "model"),
)
TENANT_OUTPUT_TOKENS = Counter(
    "switchyard_edge_tenant_output_tokens",
    "Output (completion) tokens by tenant and served model, as the request log line has them.",
    ("tenant", "model"),
)
USAGE_RECORDS_LOST = Counter(
    "switchyard_edge_usage_records_lost",
    "Requests whose usage record was not counted, by reason (store_error: Redis failed; "
    "memory_full: the memory store's row cap).",
    ("reason",),
)


def serve(port: int, host: str) -> None:
    """Serve /metrics on `port` from a thread of this process (aggregated over the workers'
    files in multiprocess mode)."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)
