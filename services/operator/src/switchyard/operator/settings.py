"""Operator configuration, from `OPERATOR_*` environment variables."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from switchyard.engines import ENGINES
from switchyard.operator.api import Engine
from switchyard.servicekit.settings import ServiceSettings


def _own_version() -> str:
    try:
        return version("switchyard-operator")
    except PackageNotFoundError:  # pragma: no cover - only outside an installed workspace
        return "latest"


#: Margins of a pod's stop around the drain: the adapter's exit once its drain ends (its
#: server's stop, closing its engine connections), and the engine's own stop after SIGTERM.
ADAPTER_EXIT_S = 5
ENGINE_STOP_S = 15


class OperatorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="OPERATOR_")

    #: Namespaces whose ModelBackends are managed, comma-separated; empty: all namespaces.
    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Namespaces whose ModelBackends the edge serves model names from (its
    #: EDGE_KUBERNETES_NAMESPACE), comma-separated; empty: all. Others are NotServed.
    served_namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)

    #: Switchyard's own images: `<prefix>adapter-<engine>:<tag>` and `<prefix>enginesim:<tag>`.
    adapter_image_prefix: str = ""
    image_tag: str = Field(default_factory=_own_version, min_length=1)
    #: Full image references per engine, overriding prefix and tag (e.g. set by skaffold).
    adapter_images: dict[Engine, str] = Field(default_factory=dict)
    simulator_image: str | None = None
    image_pull_policy: str = Field(default="IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    #: Extra environment for every adapter sidecar (e.g. OTEL_EXPORTER_OTLP_ENDPOINT).
    adapter_env: dict[str, str] = Field(default_factory=dict)

    #: The engines' images per engine, overriding the registry's pinned ones (a
    #: ModelBackend's spec.image overrides both).
    engine_images: dict[Engine, str] = Field(default_factory=dict)

    #: How long an engine may take to load its model before the kubelet restarts it.
    startup_timeout_s: int = Field(default=3600, ge=60)
    #: The one setting behind a pod's stop (see `children.py`): from SIGTERM, how long the
    #: adapter may take to drain, its NOT_SERVING-but-accepting delay included (sent as
    #: ADAPTER_DRAIN_DELAY_S and ADAPTER_SHUTDOWN_GRACE_S = drain_s - drain_delay_s). The
    #: engine's preStop sleep and the pod's terminationGracePeriodSeconds follow from it.
    #: Keep the edge's EDGE_ENDPOINT_CLOSE_GRACE_S at least this long: the edge drops an
    #: endpoint as soon as Kubernetes marks it terminating, and closes its connection then.
    drain_s: int = Field(default=30, ge=0)
    drain_delay_s: int = Field(default=2, ge=0)

    #: Requests of the sidecar and of simulated engines (CPU only).
    adapter_cpu: str = "100m"
    adapter_memory: str = "256Mi"
    simulator_cpu: str = "100m"
    simulator_memory: str = "512Mi"

    #: How often load reports are read and replica counts decided.
    scale_interval_s: float = Field(default=10.0, gt=0)
    #: Deadline of one adapter's GetLoad; adapters asked at once per backend.
    load_timeout_s: float = Field(default=2.0, gt=0)
    load_concurrency: int = Field(default=16, ge=1)
    #: Backends scaled at once in one scaling pass.
    scale_concurrency: int = Field(default=8, ge=1)
    #: Delay before a handler that hit a transient API error is retried.
    retry_delay_s: float = Field(default=5.0, gt=0)

    #: kopf's liveness endpoint: http://0.0.0.0:<port>/healthz (0: off).
    liveness_port: int = Field(default=8080, ge=0, le=65535)
    #: A kopf peering name for leader election between replicas (needs kopf's peering CRDs);
    #: unset: standalone (the chart runs one replica with the Recreate strategy).
    peering: str | None = None

    @field_validator("namespaces", "served_namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("namespaces", "served_namespaces")
    @classmethod
    def _plain_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if any(ch in name for ch in "*?[]!"):
                raise ValueError(f"namespace patterns are not supported: {name!r}")
        return value

    @model_validator(mode="after")
    def _delay_within_drain(self) -> Self:
        if self.drain_delay_s > self.drain_s:
            raise ValueError("drain_delay_s must not be longer than drain_s")
        # The pod's grace period is derived from these: set them through drain_s.
        derived = {"ADAPTER_DRAIN_DELAY_S", "ADAPTER_SHUTDOWN_GRACE_S"} & self.adapter_env.keys()
        if derived:
            raise ValueError(
                f"adapter_env must not set {', '.join(sorted(derived))}: "
                "set drain_s and drain_delay_s instead"
            )
        return self

    @property
    def adapter_shutdown_grace_s(self) -> int:
        """How long in-flight streams may take once the adapter refuses new calls."""
        return self.drain_s - self.drain_delay_s

    @property
    def engine_prestop_s(self) -> int:
        """The engine's preStop sleep: it outlives the adapter's drain and exit."""
        return self.drain_s + ADAPTER_EXIT_S

    @property
    def termination_grace_s(self) -> int:
        """The pod's terminationGracePeriodSeconds: the engine's preStop sleep, then its
        own stop after SIGTERM (past this the kubelet kills it; nothing is in flight then)."""
        return self.engine_prestop_s + ENGINE_STOP_S

    def adapter_image(self, engine: Engine) -> str:
        return self.adapter_images.get(engine) or self._own_image(ENGINES[engine].adapter_component)

    def enginesim_image(self) -> str:
        return self.simulator_image or self._own_image("enginesim")

    def engine_image(self, engine: Engine) -> str:
        return self.engine_images.get(engine) or ENGINES[engine].image

    def _own_image(self, component: str) -> str:
        return f"{self.adapter_image_prefix}{component}:{self.image_tag}"
