"""Edge configuration, from `EDGE_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from switchyard.common.settings import ServiceSettings


class EdgeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDGE_")

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    #: uvicorn worker processes. More than one needs the Redis rate-limit backend.
    workers: int = Field(default=1, ge=1, le=64)

    #: API keys (hashes only); see `python -m switchyard.edge keys --help`.
    keys_file: Path | None = None
    #: Where routes come from: a YAML file (local, reloaded when it changes) or the
    #: cluster's ModelBackend objects and their adapters' EndpointSlices.
    routes_source: Literal["file", "kubernetes"] = "file"
    routes_file: Path | None = None
    #: With the kubernetes source: the namespace to watch (unset: all namespaces).
    kubernetes_namespace: str | None = None
    #: With the kubernetes source: how often demand for a scaled-to-zero model is signalled.
    demand_interval_s: float = Field(default=10.0, gt=0)
    #: How often the keys and routes files are checked for changes.
    reload_interval_s: float = Field(default=2.0, gt=0)

    rate_limit_backend: Literal["memory", "redis"] = "memory"
    #: e.g. redis://redis:6379/0 (a secret: it may carry a password).
    redis_url: SecretStr | None = None
    #: When Redis cannot be reached: refuse requests with 503 ("closed") or let them through ("open").
    rate_limit_failure_mode: Literal["closed", "open"] = "closed"
    redis_timeout_s: float = Field(default=0.25, gt=0)

    #: Request bodies above this size get 413.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    #: Requests being served by this process at once, in all and per model; then a queue.
    max_in_flight: int = Field(default=1024, ge=1)
    max_in_flight_per_model: int = Field(default=256, ge=1)
    #: Requests waiting for a slot in this process; past that, 429.
    max_queue: int = Field(default=1024, ge=0)
    queue_timeout_s: float = Field(default=30.0, gt=0)
    #: The Retry-After sent with 429 (queue) and 503 (no backend) refusals.
    retry_after_s: int = Field(default=1, ge=1)

    #: The deadline given to the adapter for a whole request.
    request_timeout_s: float = Field(default=600.0, gt=0)
    #: SSE comment sent after this long without a chunk, so proxies keep the stream open.
    stream_keepalive_s: float = Field(default=15.0, gt=0)
    #: Endpoints tried for one request (only while nothing was sent to the client).
    max_attempts: int = Field(default=3, ge=1, le=10)
    #: Tokens reserved for a request without max_tokens (corrected with the real usage after).
    default_reserved_completion_tokens: int = Field(default=1024, ge=1)
    #: How long a closing endpoint (removed from routes) may finish its in-flight requests.
    endpoint_close_grace_s: float = Field(default=30.0, ge=0)
    #: On SIGTERM: how long in-flight requests may take before the process exits.
    shutdown_grace_s: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _coherent(self) -> EdgeSettings:
        if self.rate_limit_backend == "redis" and self.redis_url is None:
            raise ValueError("EDGE_RATE_LIMIT_BACKEND=redis needs EDGE_REDIS_URL")
        if self.workers > 1 and self.rate_limit_backend == "memory":
            raise ValueError(
                "EDGE_WORKERS > 1 needs EDGE_RATE_LIMIT_BACKEND=redis: in-memory limits are per "
                "process, so each worker would admit the full limit"
            )
        if self.routes_source == "file" and self.routes_file is None:
            raise ValueError("EDGE_ROUTES_SOURCE=file needs EDGE_ROUTES_FILE")
        return self
