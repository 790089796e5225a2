"""How each engine is launched in a pod: image, command line, port, environment and probes.

The real engines' command lines follow their own docs (see shared/reference/engines.md,
"Launch"); the simulators take the same flags, so a simulated backend differs only in its
image and the `python -m switchyard.enginesim.<engine>` in front, and keeps the ports and
probe paths (the simulators answer them the way the engines do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from switchyard.operator.api import Engine, ModelBackendSpec
from switchyard.operator.settings import OperatorSettings

#: Where the model cache is mounted in the engine container (HF_HOME points here).
MODEL_CACHE_PATH: Final = "/models"
STARTUP_PERIOD_S: Final = 10
#: The engine container's copy of spec.apiKeySecret, for an engine that takes its key only
#: as a flag: `--api-key $(SWITCHYARD_ENGINE_API_KEY)`, which the kubelet expands, so the
#: Deployment shows the variable's name and never the key.
API_KEY_VARIABLE: Final = "SWITCHYARD_ENGINE_API_KEY"


@dataclass(frozen=True, slots=True)
class EngineKind:
    name: Engine
    port: int
    #: The real engine's command (its image's own launcher).
    command: tuple[str, ...]
    #: The simulator's `python -m` arguments before the shared flags.
    sim_command: tuple[str, ...]
    #: Answers only once the model can generate: gates readiness the first time.
    startup_path: str
    readiness_path: str
    liveness_path: str
    #: SGLang's /health runs a one-token generation and may take up to its own 20 s timeout.
    health_timeout_s: int
    #: The environment variable the engine reads its API key from (None: only `--api-key`).
    api_key_env: str | None


ENGINE_KINDS: Final[dict[Engine, EngineKind]] = {
    "vllm": EngineKind(
        name="vllm",
        port=8000,
        command=("vllm", "serve"),
        sim_command=("python", "-m", "switchyard.enginesim.vllm", "serve"),
        # vLLM does not even listen while it loads; /health is 200 unless the engine died.
        startup_path="/health",
        readiness_path="/health",
        liveness_path="/health",
        health_timeout_s=5,
        # vllm/entrypoints/serve/middleware/register.py: `args.api_key or [VLLM_API_KEY]`.
        api_key_env="VLLM_API_KEY",
    ),
    "sglang": EngineKind(
        name="sglang",
        port=30000,
        command=("python3", "-m", "sglang.launch_server"),
        sim_command=("python", "-m", "switchyard.enginesim.sglang"),
        # /health generates one token (503 while starting): proof the model works. /ready is
        # a cheap flag check (503 while starting or paused) for the frequent readiness probe.
        startup_path="/health",
        readiness_path="/ready",
        liveness_path="/health",
        health_timeout_s=30,
        # srt/arg_groups/fields/serving.py: `api_key`, a flag with no environment variable.
        api_key_env=None,
    ),
    "tgi": EngineKind(
        name="tgi",
        port=3000,
        command=("text-generation-launcher",),
        sim_command=("python", "-m", "switchyard.enginesim.tgi"),
        # The router binds only after the shards have loaded and warmed up.
        startup_path="/health",
        readiness_path="/health",
        liveness_path="/health",
        health_timeout_s=10,
        # launcher/src/main.rs: `#[clap(long, env)] api_key`, i.e. --api-key or API_KEY.
        api_key_env="API_KEY",
    ),
}


@dataclass(frozen=True, slots=True)
class EngineLaunch:
    """Everything the engine container needs."""

    image: str
    command: list[str]
    args: list[str]
    port: int
    env: list[dict[str, Any]]
    startup_probe: dict[str, Any]
    readiness_probe: dict[str, Any]
    liveness_probe: dict[str, Any]


def engine_args(spec: ModelBackendSpec, served_name: str) -> list[str]:
    """The engine's own flags (the same for the real engine and its simulator)."""
    kind = ENGINE_KINDS[spec.engine]
    port = str(kind.port)
    tensor = str(spec.parallelism.tensor)
    length = spec.max_model_len
    if spec.engine == "vllm":
        args = [spec.model, "--host", "0.0.0.0", "--port", port]
        args += ["--served-model-name", served_name, "--tensor-parallel-size", tensor]
        if length:
            args += ["--max-model-len", str(length)]
    elif spec.engine == "sglang":
        args = ["--model-path", spec.model, "--host", "0.0.0.0", "--port", port]
        args += ["--served-model-name", served_name, "--tp-size", tensor, "--enable-metrics"]
        if length:
            args += ["--context-length", str(length)]
    else:
        # TGI has no served-name flag: the adapter maps the served name onto TGI's routes.
        args = ["--model-id", spec.model, "--hostname", "0.0.0.0", "--port", port]
        args += ["--num-shard", tensor]
        if length and length > 1:
            args += ["--max-input-tokens", str(length - 1), "--max-total-tokens", str(length)]
        elif length:
            args += ["--max-total-tokens", str(length)]
    if spec.api_key_secret is not None and kind.api_key_env is None:
        args += ["--api-key", f"$({API_KEY_VARIABLE})"]
    return args + list(spec.args)


def api_key_env(spec: ModelBackendSpec, name: str) -> list[dict[str, Any]]:
    """`name` set from spec.apiKeySecret (nothing without one)."""
    ref = spec.api_key_secret
    if ref is None:
        return []
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def _http_probe(path: str, *, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def engine_launch(
    spec: ModelBackendSpec, served_name: str, settings: OperatorSettings
) -> EngineLaunch:
    kind = ENGINE_KINDS[spec.engine]
    if spec.simulated:
        image = spec.image or settings.enginesim_image()
        command = list(kind.sim_command)
        env: list[dict[str, Any]] = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    else:
        image = spec.image or settings.engine_image(spec.engine)
        command = list(kind.command)
        env = [{"name": "HF_HOME", "value": MODEL_CACHE_PATH}]
    env += api_key_env(spec, kind.api_key_env or API_KEY_VARIABLE)
    env += [item.model_dump(exclude_none=True) for item in spec.env]
    timeout = kind.health_timeout_s
    return EngineLaunch(
        image=image,
        command=command,
        args=engine_args(spec, served_name),
        port=kind.port,
        env=env,
        # Loading weights can take long; the startup probe holds off the liveness probe
        # until the model is up, for at most startup_timeout_s.
        startup_probe=_http_probe(
            kind.startup_path,
            period=STARTUP_PERIOD_S,
            timeout=timeout,
            failures=math.ceil(settings.startup_timeout_s / STARTUP_PERIOD_S),
        ),
        readiness_probe=_http_probe(
            kind.readiness_path, period=5, timeout=min(timeout, 5), failures=3
        ),
        liveness_probe=_http_probe(kind.liveness_path, period=15, timeout=timeout, failures=3),
    )
