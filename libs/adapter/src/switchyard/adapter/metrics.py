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

# The engine's own load, under stable names whatever the engine (for HPA / KEDA): read
# from its metrics (`LoadReader`) every ADAPTER_LOAD_EXPORT_INTERVAL_S. Absent while the
# engine's metrics cannot be read; the KV-cache gauge only where the engine reports it.
ENGINE_RUNNING = Gauge(
    "switchyard_adapter_engine_running_requests",
    "Requests the engine is running now (vllm:num_requests_running, "
    "sglang:num_running_reqs, tgi_batch_current_size).",
    _LABELS,
)
ENGINE_WAITING = Gauge(
    "switchyard_adapter_engine_waiting_requests",
    "Requests waiting in the engine's queue (vllm:num_requests_waiting, "
    "sglang:num_queue_reqs, tgi_queue_size).",
    _LABELS,
)
KV_CACHE_USAGE = Gauge(
    "switchyard_adapter_kv_cache_usage_ratio",
    "Share of the engine's KV cache in use, 0 to 1 (vllm:kv_cache_usage_perc, "
    "sglang:token_usage; TGI reports none).",
    _LABELS,
)
