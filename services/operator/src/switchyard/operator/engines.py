"""How an engine is launched in a pod: image, command line, port, environment and probes.

What differs between engines (launcher, flags, port, probe paths, API-key wiring) is their
entry in the engine registry (`switchyard.engines`); this module turns an entry and a
ModelBackend into the engine container. The simulators take the same flags, so a simulated
backend differs only in its image and the `python -m switchyard.enginesim.<engine>` in
front, and keeps the ports and probe paths (the simulators answer them as the engines do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from switchyard.engines import ENGINES, SIM_MULTIMODAL_FLAG, EngineKind, Serving
from switchyard.operator.api import Chat, Embedding, ModelBackendSpec
from switchyard.operator.settings import OperatorSettings

#: Where the model cache is mounted in the engine container (HF_HOME points here).
MODEL_CACHE_PATH: Final = "/models"
STARTUP_PERIOD_S: Final = 10
#: The engine container's copy of spec.apiKeySecret, for an engine that takes its key only
#: as a flag: `--api-key $(SWITCHYARD_ENGINE_API_KEY)`, which the kubelet expands, so the
#: Deployment shows the variable's name and never the key.
API_KEY_VARIABLE: Final = "SWITCHYARD_ENGINE_API_KEY"
#: spec.chat.chatTemplate's ConfigMap key, mounted read-only in the engine container as
#: this file (the engines take a template as a path).
CHAT_TEMPLATE_VOLUME: Final = "chat-template"
CHAT_TEMPLATE_DIR: Final = "/etc/switchyard/chat-template"
CHAT_TEMPLATE_FILE: Final = "template.jinja"


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
    """The engine's own flags (the same for the real engine and its simulator, which also
    gets the simulator-only flag for images)."""
    kind = ENGINES[spec.engine]
    chat = spec.chat or Chat()
    embedding = spec.embedding or Embedding()
    serving = Serving(
        model=spec.model,
        host="0.0.0.0",
        port=kind.port,
        served_name=served_name,
        tensor=spec.parallelism.tensor,
        max_model_len=spec.max_model_len,
        tool_call_parser=chat.tool_call_parser,
        reasoning_parser=chat.reasoning_parser,
        chat_template=chat_template_path(spec),
        max_images_per_prompt=chat.max_images_per_prompt,
        max_top_logprobs=chat.max_top_logprobs,
        embedding=spec.task == "embed",
        matryoshka=embedding.matryoshka,
        matryoshka_dimensions=tuple(embedding.matryoshka_dimensions),
    )
    args = kind.flags(serving)
    if spec.api_key_secret is not None and kind.api_key_env is None:
        args += [kind.api_key_flag, f"$({API_KEY_VARIABLE})"]
    if spec.simulated and chat.max_images_per_prompt:
        args.append(SIM_MULTIMODAL_FLAG)
    return args + list(spec.args)


def chat_template_path(spec: ModelBackendSpec) -> str | None:
    """Where the engine finds spec.chat.chatTemplate (None: the model's own template)."""
    if spec.chat is None or spec.chat.chat_template is None:
        return None
    return f"{CHAT_TEMPLATE_DIR}/{CHAT_TEMPLATE_FILE}"


def chat_template_volume(spec: ModelBackendSpec) -> dict[str, Any] | None:
    """The pod volume holding spec.chat.chatTemplate's ConfigMap key (None without one)."""
    if spec.chat is None or spec.chat.chat_template is None:
        return None
    ref = spec.chat.chat_template.config_map_ref
    return {
        "name": CHAT_TEMPLATE_VOLUME,
        "configMap": {"name": ref.name, "items": [{"key": ref.key, "path": CHAT_TEMPLATE_FILE}]},
    }


def chat_template_mount(spec: ModelBackendSpec) -> dict[str, Any] | None:
    """The engine container's read-only mount of `chat_template_volume`."""
    if chat_template_volume(spec) is None:
        return None
    return {"name": CHAT_TEMPLATE_VOLUME, "mountPath": CHAT_TEMPLATE_DIR, "readOnly": True}


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


def _image_and_command(
    kind: EngineKind, spec: ModelBackendSpec, settings: OperatorSettings
) -> tuple[str, list[str]]:
    if spec.simulated:
        return spec.image or settings.enginesim_image(), ["python", "-m", *kind.simulator]
    return spec.image or settings.engine_image(spec.engine), list(kind.command)


def engine_launch(
    spec: ModelBackendSpec, served_name: str, settings: OperatorSettings
) -> EngineLaunch:
    kind = ENGINES[spec.engine]
    image, command = _image_and_command(kind, spec, settings)
    env: list[dict[str, Any]] = (
        [{"name": "PYTHONUNBUFFERED", "value": "1"}]
        if spec.simulated
        else [{"name": "HF_HOME", "value": MODEL_CACHE_PATH}]
    )
    env += api_key_env(spec, kind.api_key_env or API_KEY_VARIABLE)
    env += [item.model_dump(exclude_none=True) for item in spec.env]
    probes = kind.probes
    timeout = probes.timeout_s
    return EngineLaunch(
        image=image,
        command=command,
        args=engine_args(spec, served_name),
        port=kind.port,
        env=env,
        # Loading weights can take long; the startup probe holds off the liveness probe
        # until the model is up, for at most startup_timeout_s.
        startup_probe=_http_probe(
            probes.startup,
            period=STARTUP_PERIOD_S,
            timeout=timeout,
            failures=math.ceil(settings.startup_timeout_s / STARTUP_PERIOD_S),
        ),
        readiness_probe=_http_probe(
            probes.readiness, period=5, timeout=min(timeout, 5), failures=3
        ),
        liveness_probe=_http_probe(probes.liveness, period=15, timeout=timeout, failures=3),
    )
