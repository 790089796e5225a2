"""Edge configuration, from `EDGE_*` environment variables."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from switchyard.servicekit.json_schema import CONTRACT_LIMITS, SchemaLimits
from switchyard.servicekit.settings import ServiceSettings


class EdgeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDGE_")

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    #: uvicorn worker processes. More than one needs the Redis rate-limit backend.
    workers: int = Field(default=1, ge=1, le=64)
    #: Prometheus metrics, on their own port (never the public one); 0 turns them off.
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    #: Serve the API's documentation (/docs and /openapi.json) on the public port.
    docs: bool = False

    # Connections (HTTP/1.1), so idle, slow or oversized clients cannot hold the edge's
    # memory and descriptors. None of these limits applies to a response: streams may last.
    #: A request's line and headers above this size get 431, and the connection closes.
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    #: A request's headers must have arrived within this long of the connection opening
    #: (or of the request's first byte on a kept-alive connection), or it closes.
    header_timeout_s: float = Field(default=10.0, gt=0)
    #: A request's body must have arrived within this long of its headers, or it closes.
    body_timeout_s: float = Field(default=60.0, gt=0)
    #: An idle kept-alive connection closes after this long.
    keepalive_timeout_s: int = Field(default=5, ge=1)
    #: Connections open at once in this process; past that, new ones are closed at once.
    max_connections: int = Field(default=4096, ge=1)

    #: API keys (hashes only); see `python -m switchyard.edge keys --help`.
    keys_file: Path | None = None
    # Or the keys in a Kubernetes Secret, read, watched and written (the admin API) through
    # the API server: in a cluster, every replica sees a change within seconds.
    #: The Secret's name (exclusive with keys_file).
    keys_secret: str | None = None
    #: The key in the Secret's data that holds the keys document.
    keys_secret_key: str = "keys.yaml"
    #: The Secret's namespace (unset: the pod's own, as the Kubernetes client's config says).
    keys_secret_namespace: str | None = None
    #: The API server ends the Secret's watch after this long; the edge resumes it.
    keys_secret_watch_s: int = Field(default=300, ge=1)
    #: After a failed watch, the first wait before watching again (doubling, up to 10 s).
    keys_secret_retry_s: float = Field(default=0.5, gt=0, le=10)
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
    #: How long Redis may take to answer one command (then: the failure mode).
    redis_timeout_s: float = Field(default=0.25, gt=0)
    #: How long opening a connection to Redis (connect, AUTH, handshake) may take. Kept
    #: apart from the command timeout: a slow set-up is not a Redis that is down.
    redis_connect_timeout_s: float = Field(default=2.0, gt=0)
    #: Connections to Redis per edge process, all opened at start-up (before /readyz
    #: answers); a request waits up to redis_pool_timeout_s for a free one.
    redis_max_connections: int = Field(default=64, ge=1, le=10_000)
    redis_pool_timeout_s: float = Field(default=5.0, gt=0)
    #: With the "open" failure mode: how many edge processes share the limits (replicas x
    #: workers). While Redis is away each process enforces its share in memory, 1/N of each
    #: limit, rather than no limit at all.
    rate_limit_fallback_processes: int = Field(default=1, ge=1, le=10_000)

    #: Request bodies above this size get 413.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    #: Bounds on a response_format JSON schema (checking one costs ~0.3 ms of CPU per
    #: subschema). The adapters refuse more than the defaults, so these may only be lowered.
    max_schema_bytes: int = Field(
        default=CONTRACT_LIMITS.max_bytes, ge=2, le=CONTRACT_LIMITS.max_bytes
    )
    max_schema_nodes: int = Field(
        default=CONTRACT_LIMITS.max_nodes, ge=1, le=CONTRACT_LIMITS.max_nodes
    )
    max_schema_depth: int = Field(
        default=CONTRACT_LIMITS.max_depth, ge=1, le=CONTRACT_LIMITS.max_depth
    )
    max_schema_properties: int = Field(
        default=CONTRACT_LIMITS.max_properties, ge=0, le=CONTRACT_LIMITS.max_properties
    )
    #: Choices one request may ask for (`n`); each may generate max_tokens.
    max_n: int = Field(default=8, ge=1, le=128)
    #: Images in one request, and the decoded size of one image sent as a data URL.
    max_images: int = Field(default=8, ge=0, le=256)
    max_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    #: Inputs in one embeddings request (OpenAI's own limit is 2048); all of them go to the
    #: engine in one call, whose own limits may be lower.
    max_embedding_inputs: int = Field(default=2048, ge=1, le=1_000_000)
    #: Hosts whose http(s) image URLs are passed on (exact names, comma-separated; empty:
    #: none). The engine fetches such a URL from inside the cluster, so a host listed here
    #: is one every caller may make it reach. IP literals that are loopback, private,
    #: link-local (cloud metadata), unique-local or unspecified are refused even if listed.
    image_url_hosts: Annotated[frozenset[str], NoDecode] = frozenset()
    #: Worker processes running expensive request checks (JSON schemas) away from the event
    #: loop (started on first use, ~35 MiB each), and checks that may wait; past that, 429.
    validation_workers: int = Field(default=2, ge=1, le=64)
    validation_queue: int = Field(default=64, ge=0)
    #: Requests being served by this process at once, in all and per model; then a queue.
    max_in_flight: int = Field(default=1024, ge=1)
    max_in_flight_per_model: int = Field(default=256, ge=1)
    #: Requests waiting for a slot in this process; past that, 429.
    max_queue: int = Field(default=1024, ge=0)
    queue_timeout_s: float = Field(default=30.0, gt=0)
    #: The Retry-After sent with 429 (queue) and 503 (no backend) refusals.
    retry_after_s: int = Field(default=1, ge=1)
    #: The Retry-After of a 503 for a model waking from zero whose wake time the operator has
    #: not measured yet (once measured, the expected rest of the wake is sent, at most 60 s).
    wake_retry_after_s: int = Field(default=10, ge=1, le=60)
    #: Hold on wake: a request for a model with no ready replica (scaled to zero, or every
    #: replica still loading its weights) waits for one instead of a 503: at most
    #: hold_max_per_model requests per model in this process, each at most hold_timeout_s
    #: (GPU cold starts take minutes); past either, 503 with Retry-After. 0: never hold.
    hold_max_per_model: int = Field(default=256, ge=0, le=100_000)
    hold_timeout_s: float = Field(default=300.0, gt=0)

    #: Fair sharing of a saturated model: the next request admitted is chosen by weighted fair
    #: queuing across tenants, each request weighted by the tokens it may use; off: first
    #: come, first served. Per edge process.
    fair_queuing: bool = True
    #: Priority classes, highest first: a key's `priority` names one (default_priority when
    #: unset); a waiting request of a higher class is admitted before any of a lower one.
    #: Background work (the Responses API's background jobs) runs in the lowest class.
    priority_classes: Annotated[tuple[str, ...], NoDecode] = ("interactive", "standard", "batch")
    default_priority: str = "standard"

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
    #: Keepalive pings to each adapter: how often (while calls are open; the health watch
    #: always is one), and how long an answer may take before the connection is dropped.
    #: Every adapter's ADAPTER_KEEPALIVE_MIN_PING_INTERVAL_S must be at most this, or it
    #: answers GOAWAY "too_many_pings" and the calls open on that connection fail.
    adapter_keepalive_s: float = Field(default=10.0, gt=0)
    adapter_keepalive_timeout_s: float = Field(default=5.0, gt=0)
    #: Outlier detection (as Envoy's): this many calls in a row failing with UNAVAILABLE
    #: eject an endpoint for endpoint_ejection_s times its recent ejections, at most
    #: endpoint_max_ejection_s. When all of a model's endpoints are ejected, they are used anyway.
    endpoint_failure_threshold: int = Field(default=5, ge=1)
    endpoint_ejection_s: float = Field(default=30.0, gt=0)
    endpoint_max_ejection_s: float = Field(default=300.0, gt=0)
    #: Affinity routing (routes whose policy is prefix or session): an endpoint keeps its
    #: keys while its requests in flight are below this factor times the mean (bounded
    #: loads' c; at least 1, so that some endpoint always is); and the characters of each
    #: message of a chat's opening (or of a raw prompt) hashed into its key. Every edge
    #: replica needs the same values to pick the same endpoints.
    affinity_load_factor: float = Field(default=1.25, ge=1.0, le=10.0)
    affinity_prefix_chars: int = Field(default=2048, ge=16, le=1_000_000)
    #: On SIGTERM: how long in-flight requests may take before the process exits.
    shutdown_grace_s: float = Field(default=30.0, ge=0)

    # The response cache (`switchyard.edge.cache`): answers to deterministic requests.
    #: "off"; "memory" (this process only, bounded by cache_max_bytes, least recently used
    #: out); "redis" (shared by every edge replica: cache_redis_url, else redis_url).
    cache: Literal["off", "memory", "redis"] = "off"
    #: The memory store's bound in bytes, never passed: its entries' keys and values (and
    #: a fixed allowance per entry for the bookkeeping).
    cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    #: An answer larger than this is not kept (its recording stops once past it).
    cache_max_entry_bytes: int = Field(default=1024 * 1024, ge=1)
    #: How long an entry lives.
    cache_ttl_s: float = Field(default=3600.0, gt=0)
    #: The cache's Redis (a secret: it may carry a password); unset: redis_url's. Its
    #: connections have the limiter's timeouts and pool size (redis_*).
    cache_redis_url: SecretStr | None = None

    # The Responses API's store and background jobs (`switchyard.edge.openai_responses`).
    #: "memory" (this process only; background jobs run in it and die with it); "redis"
    #: (shared by every edge replica: responses_redis_url, else redis_url; background jobs
    #: queued there survive the edge that accepted them).
    responses_store: Literal["memory", "redis"] = "memory"
    #: The store's Redis (a secret); unset: redis_url's. The limiter's timeouts and pool size.
    responses_redis_url: SecretStr | None = None
    #: How long a stored response (and a finished job's events) is kept.
    responses_ttl_s: float = Field(default=30 * 24 * 3600.0, gt=0)
    #: A response with its conversation larger than this (JSON bytes) is refused (400).
    responses_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    #: The memory store's bound in responses (least recently used out).
    responses_max_entries: int = Field(default=10_000, ge=1)
    #: Background jobs: how many run at once per model in each edge process.
    jobs_concurrency_per_model: int = Field(default=4, ge=1, le=1024)
    #: ... and how many may wait (queued, all models) before `background: true` gets 429.
    jobs_max_queued: int = Field(default=10_000, ge=1)
    #: A running job's lease: renewed by its edge every third of it; a job whose edge died
    #: is taken over by another edge once its lease has run out.
    jobs_lease_s: float = Field(default=30.0, gt=0)

    # Usage records (`switchyard.edge.usage`): every request counted per tenant, key, model,
    # API and hour, read through GET /admin/v1/usage.
    #: "memory" (this process only) or "redis" (shared by the replicas, at EDGE_REDIS_URL);
    #: unset: as the rate limiter (EDGE_RATE_LIMIT_BACKEND).
    usage_store: Literal["memory", "redis"] | None = None
    #: How long usage is kept, in hours (the current hour included); default 90 days.
    usage_retention_hours: int = Field(default=90 * 24, ge=1, le=10 * 366 * 24)
    #: The memory store's bound in rows (one per tenant, key, model, API, status class,
    #: cached flag and hour); past it the oldest hours are dropped.
    usage_memory_max_rows: int = Field(default=100_000, ge=1)

    @property
    def usage_backend(self) -> Literal["memory", "redis"]:
        return self.usage_store or self.rate_limit_backend

    @model_validator(mode="after")
    def _usage_coherent(self) -> EdgeSettings:
        if self.usage_backend == "redis" and self.redis_url is None:
            raise ValueError("EDGE_USAGE_STORE=redis needs EDGE_REDIS_URL")
        if self.usage_backend == "memory" and self.workers > 1:
            raise ValueError(
                "EDGE_WORKERS > 1 needs EDGE_USAGE_STORE=redis: each worker would count "
                "(and answer) only its own share of the usage"
            )
        return self

    # Token budgets (`switchyard.edge.budget`), per key and per tenant, from the keys file.
    #: The time zone of calendar periods (`day`, `month`): an IANA name (Europe/Paris).
    budget_timezone: str = "UTC"
    #: "memory" (this process only) or "redis" (shared by the replicas, at EDGE_REDIS_URL;
    #: EDGE_RATE_LIMIT_FAILURE_MODE says what happens while it is away); unset: as the
    #: rate limiter (EDGE_RATE_LIMIT_BACKEND).
    budget_store: Literal["memory", "redis"] | None = None

    @field_validator("budget_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"EDGE_BUDGET_TIMEZONE: unknown time zone {value[:64]!r} "
                "(an IANA name such as UTC or Europe/Paris)"
            ) from None
        return value

    @property
    def budget_zone(self) -> ZoneInfo:
        return ZoneInfo(self.budget_timezone)

    @property
    def budget_backend(self) -> Literal["memory", "redis"]:
        return self.budget_store or self.rate_limit_backend

    @model_validator(mode="after")
    def _budget_coherent(self) -> EdgeSettings:
        if self.budget_backend == "redis" and self.redis_url is None:
            raise ValueError("EDGE_BUDGET_STORE=redis needs EDGE_REDIS_URL")
        if self.budget_backend == "memory" and self.workers > 1:
            raise ValueError(
                "EDGE_WORKERS > 1 needs EDGE_BUDGET_STORE=redis: each worker would admit "
                "the whole budget"
            )
        return self

    @property
    def responses_store_url(self) -> str | None:
        """The Redis URL of the Responses store (its own, else the limiter's)."""
        url = self.responses_redis_url or self.redis_url
        return url.get_secret_value() if url is not None else None

    @model_validator(mode="after")
    def _cache_coherent(self) -> EdgeSettings:
        if self.cache == "redis" and self.cache_store_url is None:
            raise ValueError("EDGE_CACHE=redis needs EDGE_CACHE_REDIS_URL or EDGE_REDIS_URL")
        if self.responses_store == "redis" and self.responses_store_url is None:
            raise ValueError(
                "EDGE_RESPONSES_STORE=redis needs EDGE_RESPONSES_REDIS_URL or EDGE_REDIS_URL"
            )
        return self

    @property
    def background_priority(self) -> str:
        """The class background work runs in: the lowest."""
        return self.priority_classes[-1]

    @property
    def cache_store_url(self) -> str | None:
        """The Redis URL of the response cache (its own, else the limiter's)."""
        url = self.cache_redis_url or self.redis_url
        return url.get_secret_value() if url is not None else None

    @field_validator("image_url_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(h.strip().lower().rstrip(".") for h in value.split(",") if h.strip())
        return value

    @field_validator("priority_classes", mode="before")
    @classmethod
    def _class_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(c.strip() for c in value.split(",") if c.strip())
        return value

    @model_validator(mode="after")
    def _coherent(self) -> EdgeSettings:
        if not self.priority_classes or len(set(self.priority_classes)) != len(
            self.priority_classes
        ):
            raise ValueError("EDGE_PRIORITY_CLASSES must name at least one class, each once")
        if self.default_priority not in self.priority_classes:
            raise ValueError("EDGE_DEFAULT_PRIORITY must be one of EDGE_PRIORITY_CLASSES")
        if self.rate_limit_backend == "redis" and self.redis_url is None:
            raise ValueError("EDGE_RATE_LIMIT_BACKEND=redis needs EDGE_REDIS_URL")
        if self.workers > 1 and self.rate_limit_backend == "memory":
            raise ValueError(
                "EDGE_WORKERS > 1 needs EDGE_RATE_LIMIT_BACKEND=redis: in-memory limits are per "
                "process, so each worker would admit the full limit"
            )
        if self.endpoint_max_ejection_s < self.endpoint_ejection_s:
            raise ValueError(
                "EDGE_ENDPOINT_MAX_EJECTION_S must be at least EDGE_ENDPOINT_EJECTION_S"
            )
        if self.keys_file is not None and self.keys_secret is not None:
            raise ValueError(
                "EDGE_KEYS_FILE and EDGE_KEYS_SECRET are exclusive: the keys come from one place"
            )
        if self.routes_source == "file" and self.routes_file is None:
            raise ValueError("EDGE_ROUTES_SOURCE=file needs EDGE_ROUTES_FILE")
        if self.metrics_port == self.port:
            raise ValueError(
                "EDGE_METRICS_PORT must differ from EDGE_PORT (metrics are not public)"
            )
        return self

    @cached_property
    def schema_limits(self) -> SchemaLimits:
        return SchemaLimits(
            self.max_schema_bytes,
            self.max_schema_nodes,
            self.max_schema_depth,
            self.max_schema_properties,
        )
