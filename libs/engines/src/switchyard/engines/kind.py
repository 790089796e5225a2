"""What Switchyard knows about an engine kind outside its adapter and its simulator.

An `EngineKind` says how the engine is started (launcher, flags, port, image, API key) and
how it is probed; `Serving` is what every launch is made from, in the same terms for every
engine, so the operator (from a ModelBackend) and the local stack (from its options) turn
it into each engine's own flags through one function per engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


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

    @property
    def adapter_module(self) -> str:
        """What `python -m` runs for the adapter in front of this engine."""
        return f"switchyard.adapter_{self.name}"

    @property
    def adapter_component(self) -> str:
        """The adapter's component name: its image, its OTel service name."""
        return f"adapter-{self.name}"
