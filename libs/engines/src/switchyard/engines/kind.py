"""What Switchyard knows about an engine kind outside its adapter and its simulator.

An `EngineKind` says how the engine is started (launcher, flags, port, image, API key) and
how it is probed; `Serving` is what every launch is made from, in the same terms for every
engine, so the operator (from a ModelBackend) and the local stack (from its options) turn
it into each engine's own flags through one function per engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final


@dataclass(frozen=True, slots=True)
class Serving:
    """One engine process to start, in engine-neutral terms (None: the engine's default)."""

    model: str
    host: str
    port: int
    #: The model name clients send (engines without such a flag leave it to the adapter).
    served_name: str
    #: Tensor-parallel size.
    tensor: int | None = None
    #: Context length in tokens (prompt and output together).
    max_model_len: int | None = None
    #: Requests generating at once; more wait in a queue.
    max_running: int | None = None
    #: Requests that may wait; past that the engine refuses.
    max_queued: int | None = None
    #: Honour request seeds (engines that do so only when told).
    seeded: bool = False
    # What chat features beyond text need (a ModelBackend's `chat`). Parser names are the
    # engine's own (vLLM `hermes` is SGLang `qwen` for Qwen models): passed on unchecked.
    #: Parse tool calls out of the model's output with this parser (and let `tool_choice:
    #: auto` call tools); None: no tool-call parsing where the engine needs one.
    tool_call_parser: str | None = None
    #: Separate the model's reasoning from its answer with this parser.
    reasoning_parser: str | None = None
    #: A chat template file the engine can read (a path); None: the model's own template.
    chat_template: str | None = None
    #: Images one prompt may carry (0: none, even on a multimodal model).
    max_images_per_prompt: int | None = None
    #: The most alternatives per token a request may ask for (`top_logprobs`).
    max_top_logprobs: int | None = None
    #: Start the model as an embedding model: it serves embeddings and generates nothing
    #: (vLLM's pooling runner, SGLang's `--is-embedding`; an engine that serves no
    #: embeddings refuses it, see `EngineKind.no_embeddings`).
    embedding: bool = False
    #: The model's vectors may be shortened (a request's `dimensions`): it was trained
    #: Matryoshka-style, which the engines learn only from the model's config, so the
    #: flags say it. `matryoshka_dimensions` limits it to those sizes (empty: any size up
    #: to the model's own).
    matryoshka: bool = False
    matryoshka_dimensions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.embedding:
            generation = [name for name in GENERATION_ONLY if getattr(self, name) is not None]
            if generation:
                raise ValueError(f"an embedding model generates nothing: {', '.join(generation)}")
        elif self.matryoshka or self.matryoshka_dimensions:
            raise ValueError("matryoshka dimensions are for an embedding model")
        if any(size < 1 for size in self.matryoshka_dimensions):
            raise ValueError("matryoshka dimensions must be at least 1")

    @property
    def matryoshka_config(self) -> dict[str, object] | None:
        """What the model's HF config must say for the engines to shorten its vectors (both
        read `matryoshka_dimensions` or `is_matryoshka` from it); None: nothing to say."""
        if self.matryoshka_dimensions:
            return {"matryoshka_dimensions": list(self.matryoshka_dimensions)}
        if self.matryoshka:
            return {"is_matryoshka": True}
        return None


#: Every simulator's flag for a model that takes images: a real model does or does not by
#: its weights, a simulated one is told.
SIM_MULTIMODAL_FLAG: Final = "--sim-multimodal"
#: Every simulator's flag for an embedding model's vector size (a real one's is its
#: hidden size).
SIM_EMBEDDING_DIMENSIONS_FLAG: Final = "--sim-embedding-dimensions"

#: The `Serving` fields a ModelBackend sets from its `chat` group (same names, camelCase).
CHAT_OPTIONS: Final = (
    "tool_call_parser",
    "reasoning_parser",
    "chat_template",
    "max_images_per_prompt",
    "max_top_logprobs",
)

#: The `CHAT_OPTIONS` that shape generated text, so mean nothing to an embedding model:
#: refused with `embedding` (here and by the CRD).
GENERATION_ONLY: Final = ("tool_call_parser", "reasoning_parser", "max_top_logprobs")


@dataclass(frozen=True, slots=True)
class Probes:
    """HTTP paths the kubelet asks, on the engine's port."""

    #: Answers only once the model can generate: gates readiness the first time.
    startup: str
    readiness: str
    liveness: str
    #: How long one health call may take.
    timeout_s: int


@dataclass(frozen=True, slots=True)
class EngineKind:
    """One engine Switchyard serves. Its adapter is `switchyard.adapter_<name>` (image
    `adapter-<name>`); its simulator takes the same flags as the engine itself."""

    #: The name a ModelBackend's `spec.engine` and the inference contract use.
    name: str
    #: The port the engine listens on in a pod.
    port: int
    #: The engine's pinned image.
    image: str
    #: The real engine's launcher (its image's own command).
    command: tuple[str, ...]
    #: The simulator's `python -m` arguments, before the flags.
    simulator: tuple[str, ...]
    #: The engine's own flags for a `Serving` (the real engine and its simulator alike).
    flags: Callable[[Serving], list[str]]
    probes: Probes
    #: The environment variable the engine reads its API key from (None: only the flag).
    api_key_env: str | None
    api_key_flag: str = "--api-key"
    #: The `CHAT_OPTIONS` this engine has no flag for, each with the reason: its `flags`
    #: ignores them, so the CRD refuses a ModelBackend that sets one for this engine.
    unsupported: Mapping[str, str] = field(default_factory=dict)
    #: Why this engine cannot be started as an embedding model (None: it can): its `flags`
    #: refuse `Serving.embedding`, and so does the CRD.
    no_embeddings: str | None = None

    @property
    def adapter_module(self) -> str:
        """What `python -m` runs for the adapter in front of this engine."""
        return f"switchyard.adapter_{self.name}"

    @property
    def adapter_component(self) -> str:
        """The adapter's component name: its image, its OTel service name."""
        return f"adapter-{self.name}"
