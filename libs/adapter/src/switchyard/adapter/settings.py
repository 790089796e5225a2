"""Adapter configuration, from `ADAPTER_*` environment variables."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from switchyard.servicekit.settings import ServiceSettings


class AdapterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ADAPTER_")

    #: The engine beside this adapter (the same pod, so localhost in a cluster).
    engine_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8000")
    #: The engine's `--api-key`, sent as a Bearer token (in a cluster: from the Secret the
    #: ModelBackend names).
    engine_api_key: SecretStr | None = None
    #: The model name clients send; requests for any other name get NOT_FOUND.
    served_model_name: str = Field(min_length=1)
    host: str = "0.0.0.0"
    #: 0 asks the OS for a free port; the `adapter_started` log line gives the one bound.
    port: int = Field(default=50051, ge=0, le=65535)
    #: Prometheus metrics of the adapter itself; 0 disables the endpoint.
    metrics_port: int = Field(default=9090, ge=0, le=65535)

    connect_timeout_s: float = Field(default=2.0, gt=0)
    #: Upper bound for a request when the caller sets no gRPC deadline.
    request_timeout_s: float = Field(default=600.0, gt=0)
    #: How often to ask the engine whether it can generate.
    health_interval_s: float = Field(default=2.0, gt=0)
    health_timeout_s: float = Field(default=10.0, gt=0)
    #: How long load reports are reused before the engine's metrics are read again.
    load_cache_s: float = Field(default=0.5, ge=0)
    #: The shortest interval between keepalive pings a client (the edge) may send on a
    #: connection while nothing else is sent; faster ones count as strikes, and after two
    #: the connection gets GOAWAY "too_many_pings" (gRPC's abuse policy). Keep it at or
    #: below the edge's EDGE_ADAPTER_KEEPALIVE_S (10 s), with room for timer jitter.
    keepalive_min_ping_interval_s: float = Field(default=5.0, gt=0)
    #: On SIGTERM the adapter reports NOT_SERVING at once but still accepts calls for this
    #: long: routers learn of it asynchronously (an edge's health watch within milliseconds,
    #: a Kubernetes endpoint removal within seconds), and a call sent before they did is
    #: served rather than refused. Then it refuses new calls and drains.
    drain_delay_s: float = Field(default=2.0, ge=0)
    #: On SIGTERM, after the drain delay: how long in-flight requests may take to finish.
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    #: How often the engine's load is read into the adapter's own gauges (requests running
    #: and waiting, KV-cache use), the per-model signals for autoscalers; 0: never.
    load_export_interval_s: float = Field(default=5.0, ge=0)
    #: Connections kept to the engine (one per concurrent request).
    max_connections: int = Field(default=1024, ge=1)
    #: The most choices (`n`) one request may ask for.
    max_n: int = Field(default=8, ge=1)

    @field_validator("engine_url")
    @classmethod
    def _no_path(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if value.path not in (None, "", "/"):
            raise ValueError("give the engine's base URL, without a path")
        return value

    @property
    def engine_base_url(self) -> str:
        return str(self.engine_url).rstrip("/")
