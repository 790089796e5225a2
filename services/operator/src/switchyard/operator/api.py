"""The `ModelBackend` API (`switchyard.dev/v1alpha1`): one set of pydantic models.

These models are the single source of truth: `crd.py` turns them into the CRD's
`openAPIV3Schema` (defaults, enums, minimums, descriptions from the attribute docstrings)
and the CEL rules below become its `x-kubernetes-validations`. The same rules run as
pydantic validators, so the operator, the tests and the API server reject the same specs
with the same messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AfterValidator,
    AliasGenerator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from switchyard.engines import ENGINES as ENGINE_KINDS
from switchyard.engines import GENERATION_ONLY, NAMES

GROUP: Final = "switchyard.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ModelBackend"
PLURAL: Final = "modelbackends"
SINGULAR: Final = "modelbackend"
SHORT_NAMES: Final = ("mb",)

#: The engines a ModelBackend may name: the registry's (`switchyard.engines`).
ENGINES: Final[tuple[str, ...]] = NAMES
#: What the model is started for: generating text (chat, completions) or embeddings.
Task = Literal["generate", "embed"]
Phase = Literal["Pending", "Loading", "Ready", "Degraded", "Failed", "NotServed"]
PHASES: Final[tuple[Phase, ...]] = (
    "Pending", "Loading", "Ready", "Degraded", "Failed", "NotServed",
)  # fmt: skip

#: A Kubernetes quantity without a sign ("8", "500m", "48Gi"); YAML integers are accepted.
QUANTITY_PATTERN: Final = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
#: metadata.name: the adapter Service is `<name>-adapter`, a DNS-1035 label of at most 63.
NAME_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME_LENGTH: Final = 55


def _one_of(names: Sequence[str]) -> str:
    """`a, b or c`."""
    return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _known_engine(value: str) -> str:
    if value not in ENGINES:
        # What pydantic says for a Literal of the names, so errors read as they always did.
        expected = _one_of([repr(name) for name in ENGINES])
        raise PydanticCustomError(
            "literal_error", "Input should be {expected}", {"expected": expected}
        )
    return value


#: An engine's name, checked against the registry and written in the schema as an enum.
Engine = Annotated[
    str,
    AfterValidator(_known_engine),
    WithJsonSchema({"enum": list(ENGINES), "type": "string"}),
]


def _int_to_str(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_int_to_str),
    StringConstraints(pattern=QUANTITY_PATTERN),
    # The form controller-gen writes for resource.Quantity: a structural int-or-string.
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
#: A Secret's or ConfigMap's name (a DNS subdomain).
ObjectName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
]
#: A key of a Secret's or ConfigMap's data.
DataKey = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
]


@dataclass(frozen=True, slots=True)
class Rule:
    """One validation rule, written twice: in CEL for the API server, in Python for pydantic."""

    cel: str
    message: str
    check: Callable[[Any], bool]
    #: The field the API server blames (a JSON path relative to the rule's object).
    field_path: str | None = None

    def schema(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def _cel(rules: Sequence[Rule]) -> dict[str, Any]:
    return {"x-kubernetes-validations": [rule.schema() for rule in rules]}


def _enforce(model: Any, rules: Sequence[Rule]) -> None:
    failed = [rule.message for rule in rules if not rule.check(model)]
    if failed:
        raise ValueError("; ".join(failed))


def _full_default(model: type[BaseModel]) -> dict[str, Any]:
    """The schema `default` of an object-valued field: every field of the model's default.

    The API server evaluates a node's CEL rules on its `default` as written, without first
    filling the default's own fields from their defaults (`{}` would fail every rule that
    reads a field). Written out in full, the default passes the rules and is also what
    nested defaulting would make of `{}`: the same object either way.
    """
    full: dict[str, Any] = model().model_dump(mode="json", by_alias=True, exclude_none=True)
    return full


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )


class Resources(ApiModel):
    """What one replica's engine container asks for. Ignored when `simulated`: simulators get
    the operator's small CPU-only defaults, so the same resource runs on a laptop cluster."""

    gpus: int = Field(default=1, ge=0)
    """GPUs per replica (requests = limits, under `gpuResource`). 0 runs the engine without GPUs."""
    gpu_resource: str = Field(
        default="nvidia.com/gpu",
        min_length=1,
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
    )
    """The extended resource name of the GPUs (e.g. `nvidia.com/gpu`, `amd.com/gpu`)."""
    cpu: Quantity | None = None
    """CPU request of the engine container (no CPU limit, so the engine is never throttled)."""
    memory: Quantity | None = None
    """Memory request and limit of the engine container (host memory, not GPU memory)."""


class Parallelism(ApiModel):
    """How the model is split across the GPUs of one replica."""

    tensor: int = Field(default=1, ge=1)
    """Tensor parallel size (vLLM `--tensor-parallel-size`, SGLang `--tp-size`, TGI `--num-shard`)."""


SCALING_RULES: Final = (
    Rule(
        "self.minReplicas <= self.maxReplicas",
        "minReplicas must not exceed maxReplicas",
        lambda s: s.min_replicas <= s.max_replicas,
        ".minReplicas",
    ),
    Rule(
        "self.warmReplicas <= self.maxReplicas",
        "warmReplicas must not exceed maxReplicas",
        lambda s: s.warm_replicas <= s.max_replicas,
        ".warmReplicas",
    ),
    Rule(
        "!has(self.replicas) || (has(self.mode) && self.mode == 'external')",
        "replicas is set by `kubectl scale`, HPA or KEDA and needs mode: external "
        "(in mode: operator the operator's policy decides)",
        lambda s: s.mode == "external" or s.replicas is None,
        ".replicas",
    ),
    Rule(
        "!has(self.mode) || self.mode != 'external' || has(self.replicas)",
        "mode: external needs replicas (the count the external autoscaler starts from)",
        lambda s: s.mode != "external" or s.replicas is not None,
        ".replicas",
    ),
)


class Scaling(ApiModel):
    """Replicas follow demand: desired = clamp(demand + warmReplicas, minReplicas, maxReplicas),
    where demand = ceil(requests in flight / targetInFlightPerReplica) from the adapters' load
    reports. Scale-up is immediate; scale-down waits until the lower count has held for
    scaleDownDelaySeconds. With minReplicas and warmReplicas both 0 the backend scales to zero
    and wakes up on the edge's demand annotation (switchyard.dev/demanded-at).

    With mode: external an outside autoscaler (HPA, KEDA, `kubectl scale`) decides through the
    scale subresource, which writes `replicas`; the operator runs clamp(replicas, minReplicas,
    maxReplicas) and never writes `replicas` itself (the demand policy and the wake-up are then
    the autoscaler's job)."""

    model_config = ConfigDict(json_schema_extra=_cel(SCALING_RULES))

    mode: Literal["operator", "external"] = "operator"
    """Who decides the replicas: `operator` (the demand policy above) or `external` (`replicas`,
    written by HPA, KEDA or `kubectl scale` through the scale subresource)."""
    replicas: int | None = Field(default=None, ge=0)
    """mode: external only: the replicas asked for (the scale subresource's spec.replicas),
    clamped to [minReplicas, maxReplicas]. Refused in mode: operator, so that `kubectl scale`
    fails loudly instead of being silently overridden by the policy."""

    min_replicas: int = Field(default=1, ge=0)
    """Never fewer replicas than this."""
    max_replicas: int = Field(default=1, ge=1)
    """Never more replicas than this."""
    warm_replicas: int = Field(default=0, ge=0)
    """Ready replicas kept beyond current demand, to absorb bursts without a model load."""
    target_in_flight_per_replica: int = Field(default=32, ge=1)
    """Requests in flight (running + queued) one replica should carry."""
    scale_down_delay_seconds: int = Field(default=300, ge=0)
    """How long a lower replica count must hold before replicas are removed."""

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _enforce(self, SCALING_RULES)
        return self


class AdapterOverrides(ApiModel):
    """The adapter sidecar (the gRPC front of the engine)."""

    image: NonEmpty | None = None
    """Adapter image; default: the operator's `adapter-<engine>` image."""


class SecretKeyRef(ApiModel):
    """One key of a Secret in the ModelBackend's namespace."""

    name: ObjectName
    """The Secret's name."""
    key: DataKey
    """The key in the Secret whose value is used."""


class ConfigMapKeyRef(ApiModel):
    """One key of a ConfigMap in the ModelBackend's namespace."""

    name: ObjectName
    """The ConfigMap's name."""
    key: DataKey
    """The key whose value is used."""


class ChatTemplate(ApiModel):
    """A chat template (Jinja) in place of the model's own."""

    config_map_ref: ConfigMapKeyRef
    """The ConfigMap key holding the template. It is mounted read-only into the engine
    container and passed as a file (vLLM and SGLang `--chat-template`); the engine reads it
    when it starts, so a changed ConfigMap takes effect with the next rollout."""


class Chat(ApiModel):
    """What the engine needs to serve chat features beyond plain text: tool calls, reasoning,
    a chat template, images, log probabilities. Unset fields keep the engine's defaults.
    Parser names are the engine's own, and differ between engines (vLLM `hermes` is SGLang
    `qwen` for Qwen models): see each engine's list of parsers."""

    tool_call_parser: NonEmpty | None = None
    """The parser that turns the model's tool-call output into OpenAI `tool_calls` (vLLM
    `--enable-auto-tool-choice --tool-call-parser`, SGLang `--tool-call-parser`), e.g.
    `hermes` (vLLM) or `qwen` (SGLang) for Qwen 2.5/3, `llama3_json` (vLLM) or `llama3`
    (SGLang) for Llama 3.1+. Without one, vLLM refuses `tool_choice: auto` and SGLang answers
    tool calls as plain text. TGI has none: it always serves tools, so leave this unset."""
    reasoning_parser: NonEmpty | None = None
    """The parser that moves the model's reasoning out of the answer, into its own field
    (vLLM `reasoning`, SGLang `reasoning_content`; vLLM and SGLang `--reasoning-parser`),
    e.g. `qwen3`, `deepseek_r1` (vLLM) or `deepseek-r1` (SGLang). TGI has none."""
    chat_template: ChatTemplate | None = None
    """A chat template in place of the model's own (vLLM and SGLang only; TGI reads one only
    inside a tokenizer_config.json)."""
    max_images_per_prompt: int | None = Field(default=None, ge=0)
    """Images one request may carry (vLLM `--limit-mm-per-prompt`, SGLang
    `--limit-mm-data-per-request`); 0 serves a multimodal model as text-only. Default: the
    engine's own. The model itself must take images; a simulated backend takes them with 1 or
    more (its simulator's `--sim-multimodal`, which a simulated TGI backend, without this
    limit, gets from `args`). TGI has no such limit."""
    max_top_logprobs: int | None = Field(default=None, ge=0)
    """The most `top_logprobs` a request may ask for (vLLM `--max-logprobs`, default 20;
    TGI `--max-top-n-tokens`, default 5). SGLang has no such limit."""


class Embedding(ApiModel):
    """How an embedding model (`task: embed`) serves its vectors. Unset fields keep what the
    model's own config says."""

    matryoshka: bool = False
    """The model was trained Matryoshka-style, so a request's `dimensions` may shorten its
    vectors (to any size up to the model's own). vLLM and SGLang learn this only from the
    model's config, which this sets (`is_matryoshka`, through vLLM `--hf-overrides` and
    SGLang `--json-model-override-args`); without it, in the flag or in the config, both
    engines refuse `dimensions`."""
    matryoshka_dimensions: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """The only sizes `dimensions` may ask for (the config's `matryoshka_dimensions`, set
    the same way); implies `matryoshka`. Empty: any size."""


class Routing(ApiModel):
    """How the edge picks one of the backend's replicas for each request."""

    policy: Literal["load", "prefix", "session"] = "load"
    """`load`: the less busy of two replicas picked at random. `prefix`: the replica the
    prompt's opening (system prompt and first user turn) hashes to, so each conversation
    stays with the engine that caches its prefix, on every edge replica alike; a replica
    past its share of the load passes the request on (consistent hashing with bounded
    loads). `session`: the same by the client's session id (header `x-session-id` or
    `x-switchyard-session`, or the body's `user`), by prefix when it sends none."""


ENV_RULES: Final = (
    Rule(
        "!(has(self.value) && has(self.valueFrom))",
        "set value or valueFrom, not both",
        lambda e: e.value is None or e.value_from is None,
    ),
)


class EnvVar(ApiModel):
    """An environment variable of the engine container (a core/v1 EnvVar)."""

    model_config = ConfigDict(json_schema_extra=_cel(ENV_RULES))

    name: NonEmpty
    value: str | None = None
    value_from: dict[str, Any] | None = None
    """A core/v1 EnvVarSource, e.g. `{secretKeyRef: {name: hf, key: token}}`."""

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _enforce(self, ENV_RULES)
        return self


class Toleration(ApiModel):
    """A core/v1 Toleration."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


MODEL_CACHE_RULES: Final = (
    Rule(
        "!(has(self.claimName) && has(self.sizeLimit))",
        "set claimName (a PersistentVolumeClaim) or sizeLimit (an emptyDir), not both",
        lambda c: c.claim_name is None or c.size_limit is None,
    ),
)


class ModelCache(ApiModel):
    """Where the engine keeps downloaded weights (mounted at /models, HF_HOME=/models).
    Unset: an emptyDir without a size limit. Ignored when `simulated`."""

    model_config = ConfigDict(json_schema_extra=_cel(MODEL_CACHE_RULES))

    claim_name: NonEmpty | None = None
    """A PersistentVolumeClaim in the same namespace (ReadWriteMany or ReadOnlyMany to share it)."""
    read_only: bool = False
    """Mount the claim read-only (weights downloaded beforehand)."""
    size_limit: Quantity | None = None
    """The size limit of an emptyDir cache, used when no claimName is given."""

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _enforce(self, MODEL_CACHE_RULES)
        return self


def _chat_option_unset_for(engine: str, option: str) -> Callable[[Any], bool]:
    def check(spec: Any) -> bool:
        return spec.engine != engine or spec.chat is None or getattr(spec.chat, option) is None

    return check


def _unsupported_chat_rules() -> tuple[Rule, ...]:
    """A rule per chat option an engine has no flag for (the registry's `unsupported`):
    refused, never silently dropped."""
    return tuple(
        Rule(
            f"!(self.engine == '{kind.name}' && has(self.chat) && "
            f"has(self.chat.{to_camel(option)}))",
            f"chat.{to_camel(option)} is not for engine {kind.name}: {why}",
            _chat_option_unset_for(kind.name, option),
            f".chat.{to_camel(option)}",
        )
        for kind in ENGINE_KINDS.values()
        for option, why in kind.unsupported.items()
    )


def _not_embedding_on(engine: str) -> Callable[[Any], bool]:
    def check(spec: Any) -> bool:
        return bool(spec.engine != engine or spec.task != "embed")

    return check


def _chat_option_unset_when_embedding(option: str) -> Callable[[Any], bool]:
    def check(spec: Any) -> bool:
        return spec.task != "embed" or spec.chat is None or getattr(spec.chat, option) is None

    return check


def _no_embeddings_rules() -> tuple[Rule, ...]:
    """A rule per engine that serves no embeddings (the registry's `no_embeddings`)."""
    return tuple(
        Rule(
            f"!(self.engine == '{kind.name}' && self.task == 'embed')",
            f"task embed is not for engine {kind.name}: {kind.no_embeddings}",
            _not_embedding_on(kind.name),
            ".task",
        )
        for kind in ENGINE_KINDS.values()
        if kind.no_embeddings
    )


def _generation_only_rules() -> tuple[Rule, ...]:
    """A rule per chat option that shapes generated text: meaningless on an embedding model,
    so refused there rather than passed to an engine that would ignore or refuse it."""
    return tuple(
        Rule(
            f"!(self.task == 'embed' && has(self.chat) && has(self.chat.{to_camel(option)}))",
            f"chat.{to_camel(option)} is not for an embedding model (task embed), which "
            "generates no text",
            _chat_option_unset_when_embedding(option),
            f".chat.{to_camel(option)}",
        )
        for option in GENERATION_ONLY
    )


SPEC_RULES: Final = (
    Rule(
        # The API server applies the schema's defaults before it validates, so every field
        # named here is present.
        "self.simulated || self.resources.gpus == 0 || "
        "self.parallelism.tensor <= self.resources.gpus",
        "parallelism.tensor must not exceed resources.gpus (each tensor-parallel rank needs a GPU)",
        lambda s: s.simulated or s.resources.gpus == 0 or s.parallelism.tensor <= s.resources.gpus,
        ".parallelism.tensor",
    ),
    *_unsupported_chat_rules(),
    Rule(
        "self.task == 'embed' || !has(self.embedding)",
        "embedding is for an embedding model: set task embed",
        lambda s: s.task == "embed" or s.embedding is None,
        ".embedding",
    ),
    *_no_embeddings_rules(),
    *_generation_only_rules(),
)


class ModelBackendSpec(ApiModel):
    """One served model: engine Deployments with the adapter as a sidecar, a Service for the
    adapter's gRPC port and a PodDisruptionBudget, scaled between minReplicas and maxReplicas."""

    model_config = ConfigDict(json_schema_extra=_cel(SPEC_RULES))

    engine: Engine = Field(description=f"The inference engine: {_one_of(ENGINES)}.")
    model: NonEmpty
    """What the engine loads: a Hugging Face model id or a path (under the model cache)."""
    served_model_name: NonEmpty | None = None
    """The model name clients send; default: metadata.name."""
    aliases: list[NonEmpty] = Field(
        default_factory=list, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Other names the edge accepts for this model."""
    simulated: bool = False
    """Run the engine's simulator (CPU only, no GPUs, no model download) with the same ports,
    probes and adapter: for clusters without GPUs (kind, CI). GPU resources, nodeSelector,
    runtimeClassName and modelCache are then ignored."""
    image: NonEmpty | None = None
    """Engine container image; default: the operator's pinned image for the engine."""
    args: list[str] = Field(default_factory=list)
    """Extra engine flags, appended after the operator's own (model, port, served name,
    parallelism, length); do not repeat those (TGI refuses repeated flags)."""
    env: list[EnvVar] = Field(default_factory=list)
    """Extra environment of the engine container (after the operator's), e.g. HF_TOKEN."""
    adapter: AdapterOverrides | None = None
    api_key_secret: SecretKeyRef | None = None
    """The engine's API key, from a Secret in the same namespace. The engine then requires it
    as a Bearer token (vLLM `VLLM_API_KEY`, SGLang `--api-key`, TGI `API_KEY`) and the adapter
    sends it (`ADAPTER_ENGINE_API_KEY`); the Deployment only names the Secret."""
    resources: Resources = Field(
        default_factory=Resources, json_schema_extra={"default": _full_default(Resources)}
    )
    parallelism: Parallelism = Field(
        default_factory=Parallelism, json_schema_extra={"default": _full_default(Parallelism)}
    )
    max_model_len: int | None = Field(default=None, ge=1)
    """Context length in tokens (vLLM `--max-model-len`, SGLang `--context-length`, TGI
    `--max-total-tokens`); default: the model's own."""
    task: Task = "generate"
    """`generate`: the model generates text (chat, completions). `embed`: it is started as
    an embedding model (vLLM `--runner pooling --convert embed`, which also turns a
    generative checkpoint into one; SGLang `--is-embedding`) and serves embeddings only.
    TGI serves no embeddings."""
    embedding: Embedding | None = None
    chat: Chat | None = None
    routing: Routing | None = None
    scaling: Scaling = Field(
        default_factory=Scaling, json_schema_extra={"default": _full_default(Scaling)}
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the engine pods require (ignored when simulated)."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Taints the engine pods tolerate (e.g. nvidia.com/gpu:NoSchedule)."""
    runtime_class_name: NonEmpty | None = None
    """The pods' RuntimeClass (e.g. nvidia); ignored when simulated."""
    model_cache: ModelCache | None = None
    shm_size: Quantity = "2Gi"
    """Size of the in-memory /dev/shm (NCCL and the engines' worker processes need more than
    the container runtime's 64Mi); counted against the pod's memory."""

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _enforce(self, SPEC_RULES)
        return self

    def effective_served_name(self, name: str) -> str:
        return self.served_model_name or name


class Condition(ApiModel):
    """A standard metav1.Condition."""

    type: NonEmpty
    status: Literal["True", "False", "Unknown"]
    reason: NonEmpty
    """CamelCase reason, e.g. ReplicasReady."""
    message: str
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    observed_generation: int | None = Field(default=None, ge=0)


class PendingScaleDown(ApiModel):
    """A scale-down waiting out scaleDownDelaySeconds."""

    since: str = Field(json_schema_extra={"format": "date-time"})
    """When the lower replica count was first recommended."""
    replicas: int = Field(ge=0)
    """The replicas it will go to: the highest count recommended since then."""


class ModelBackendStatus(ApiModel):
    """What the operator observed; written by the operator only."""

    phase: Phase | None = None
    """Pending (nothing asked for yet, or scaled to zero), Loading (no replica ready yet),
    Ready (all desired replicas ready), Degraded (serving, but fewer ready replicas than
    desired), Failed (invalid spec, or the rollout failed with nothing serving), NotServed
    (the edge sends this model name to another ModelBackend, or does not serve names from
    this namespace: see the Served condition; the replicas are kept as specified)."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Ready (all desired replicas serving), Available (at least one replica serving) and
    Served (the edge routes this backend's model names to it)."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation this status describes."""
    replicas: int | None = Field(default=None, ge=0)
    """Engine pods that exist."""
    selector: str | None = None
    """The label selector of the engine pods, as a string (the scale subresource's
    labelSelectorPath: HPA finds the pods it reads metrics from with it)."""
    ready_replicas: int | None = Field(default=None, ge=0)
    """Pods whose engine has loaded the model and whose adapter serves."""
    desired_replicas: int | None = Field(default=None, ge=0)
    """Replicas the operator asks for now."""
    warm_replicas: int | None = Field(default=None, ge=0)
    """Ready replicas beyond current demand: idle, model loaded, ready for a burst."""
    demand_replicas: int | None = Field(default=None, ge=0)
    """Replicas the last load report called for (in flight / targetInFlightPerReplica)."""
    pending_scale_down: PendingScaleDown | None = None
    endpoint: str | None = None
    """The adapters' gRPC address: <name>-adapter.<namespace>.svc:50051."""
    served_model_name: str | None = None
    """The model name clients send (spec.servedModelName or metadata.name)."""
    engine: Engine | None = None
    waking_since: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    """When the operator scaled the backend up from zero replicas, while none is ready yet."""
    last_wake_seconds: int | None = Field(default=None, ge=0)
    """How long the last wake from zero took: scale-up to the first ready replica. The edge
    bases its Retry-After on it while the backend wakes."""


ROOT_RULES: Final = (
    Rule(
        f"self.metadata.name.size() <= {MAX_NAME_LENGTH} && "
        f"self.metadata.name.matches('{NAME_PATTERN}')",
        f"metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting "
        f"with a letter) of at most {MAX_NAME_LENGTH} characters: the adapter Service is named "
        "<name>-adapter",
        lambda r: _valid_name(str(r.metadata.get("name", ""))),
    ),
)


def _valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and re.fullmatch(NAME_PATTERN, name) is not None


class ModelBackend(ApiModel):
    """A model served by one engine kind, scaled by the Switchyard operator."""

    model_config = ConfigDict(json_schema_extra=_cel(ROOT_RULES), extra="forbid")

    api_version: Literal["switchyard.dev/v1alpha1"]
    kind: Literal["ModelBackend"]
    metadata: dict[str, Any]
    spec: ModelBackendSpec
    status: ModelBackendStatus | None = None

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _enforce(self, ROOT_RULES)
        return self


ALL_RULES: Final[dict[str, tuple[Rule, ...]]] = {
    "ModelBackend": ROOT_RULES,
    "ModelBackendSpec": SPEC_RULES,
    "Scaling": SCALING_RULES,
    "EnvVar": ENV_RULES,
    "ModelCache": MODEL_CACHE_RULES,
}
