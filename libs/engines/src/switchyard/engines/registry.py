"""The engines Switchyard serves: one entry each. Adding an engine is one entry here, plus
its adapter (`services/adapter-<name>`) and its simulator (`switchyard.enginesim.<name>`).

The operator launches engines from these entries and the CRD's `engine` enum lists their
names (`make crd`); the local stack (`make run`) and the tests start the simulators and
adapters from them. Command lines follow each engine's own launcher, read in its code at
the release the image pins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from switchyard.engines.kind import EngineKind, Probes, Serving

#: vLLM's default `--max-num-seqs` (its OpenAI server's on most GPUs; its simulator's).
_VLLM_MAX_NUM_SEQS: Final = 256


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _images(limit: int) -> str:
    """A per-modality limit as vLLM and SGLang read it: a JSON object."""
    return _json({"image": limit})


def _vllm_flags(s: Serving) -> list[str]:
    flags = [s.model, "--host", s.host, "--port", str(s.port), "--served-model-name", s.served_name]
    if s.embedding:
        # vLLM registers /v1/embeddings only for the pooling runner, and `--convert embed`
        # gives a generative checkpoint an embedding pooler (a native embedding model is
        # left as it is: model_executor/models/adapters.py `as_embedding_model`).
        flags += ["--runner", "pooling", "--convert", "embed"]
    if s.matryoshka_config:
        # config/model.py `is_matryoshka` reads the HF config, which this flag overrides.
        flags += ["--hf-overrides", _json(s.matryoshka_config)]
    if s.tensor is not None:
        flags += ["--tensor-parallel-size", str(s.tensor)]
    if s.max_model_len:
        flags += ["--max-model-len", str(s.max_model_len)]
    if s.max_running:
        flags += ["--max-num-seqs", str(s.max_running)]
    if s.max_queued is not None:
        # vLLM's limit counts unfinished requests, the running ones included.
        unfinished = (s.max_running or _VLLM_MAX_NUM_SEQS) + s.max_queued
        flags += ["--max-num-queued-reqs", str(unfinished)]
    if s.tool_call_parser:
        # vLLM refuses `tool_choice: auto` without the first flag, and the first without
        # the parser (entrypoints/common/cli_args.py): a parser means both.
        flags += ["--enable-auto-tool-choice", "--tool-call-parser", s.tool_call_parser]
    if s.reasoning_parser:
        flags += ["--reasoning-parser", s.reasoning_parser]
    if s.chat_template:
        flags += ["--chat-template", s.chat_template]
    if s.max_images_per_prompt is not None:
        flags += ["--limit-mm-per-prompt", _images(s.max_images_per_prompt)]
    if s.max_top_logprobs is not None:
        flags += ["--max-logprobs", str(s.max_top_logprobs)]
    return flags


def _sglang_flags(s: Serving) -> list[str]:
    flags = ["--model-path", s.model, "--host", s.host, "--port", str(s.port)]
    flags += ["--served-model-name", s.served_name]
    if s.tensor is not None:
        flags += ["--tp-size", str(s.tensor)]
    if s.embedding:
        flags.append("--is-embedding")
    if s.matryoshka_config:
        # configs/model_config.py reads `is_matryoshka` from the HF config these override.
        flags += ["--json-model-override-args", _json(s.matryoshka_config)]
    # Without it SGLang serves no /metrics, which the adapter's load reports read.
    flags.append("--enable-metrics")
    if s.max_model_len:
        flags += ["--context-length", str(s.max_model_len)]
    if s.seeded and not s.embedding:
        # SGLang reads `sampling_seed` only in this mode (and ignores it otherwise).
        flags.append("--enable-deterministic-inference")
    if s.max_running:
        flags += ["--max-running-requests", str(s.max_running)]
    if s.max_queued is not None:
        flags += ["--max-queued-requests", str(s.max_queued)]
    if s.tool_call_parser:
        flags += ["--tool-call-parser", s.tool_call_parser]
    if s.reasoning_parser:
        flags += ["--reasoning-parser", s.reasoning_parser]
    if s.chat_template:
        flags += ["--chat-template", s.chat_template]
    if s.max_images_per_prompt is not None:
        flags += ["--limit-mm-data-per-request", _images(s.max_images_per_prompt)]
    return flags


_TGI_NO_EMBEDDINGS: Final = (
    "TGI serves no embeddings (its router has no embeddings route; Hugging Face serves them "
    "with text-embeddings-inference, another server)"
)


def _tgi_flags(s: Serving) -> list[str]:
    if s.embedding:
        raise ValueError(_TGI_NO_EMBEDDINGS)
    # TGI has no served-name flag: the adapter maps the served name onto TGI's routes.
    flags = ["--model-id", s.model, "--hostname", s.host, "--port", str(s.port)]
    if s.tensor is not None:
        flags += ["--num-shard", str(s.tensor)]
    length = s.max_model_len
    if length and length > 1:
        flags += ["--max-input-tokens", str(length - 1), "--max-total-tokens", str(length)]
    elif length:
        flags += ["--max-total-tokens", str(length)]
    if s.max_running or s.max_queued is not None:
        # TGI has one limit: requests admitted at all (running or queued).
        admitted = (s.max_running or 0) + (s.max_queued or 0)
        flags += ["--max-concurrent-requests", str(admitted)]
    if s.max_top_logprobs is not None:
        flags += ["--max-top-n-tokens", str(s.max_top_logprobs)]
    return flags


_KINDS: Final = (
    EngineKind(
        name="vllm",
        port=8000,
        image="vllm/vllm-openai:v0.33.0",
        command=("vllm", "serve"),
        simulator=("switchyard.enginesim.vllm", "serve"),
        flags=_vllm_flags,
        # vLLM does not even listen while it loads; /health is 200 unless the engine died.
        probes=Probes(startup="/health", readiness="/health", liveness="/health", timeout_s=5),
        # vllm/entrypoints/serve/middleware/register.py: `args.api_key or [VLLM_API_KEY]`.
        api_key_env="VLLM_API_KEY",
    ),
    EngineKind(
        name="sglang",
        port=30000,
        image="lmsysorg/sglang:v0.5.23",
        command=("python3", "-m", "sglang.launch_server"),
        simulator=("switchyard.enginesim.sglang",),
        flags=_sglang_flags,
        # /health generates one token (503 while starting): proof the model works, within
        # SGLang's own 20 s timeout. /ready is a cheap flag check (503 while starting or
        # paused) for the frequent readiness probe.
        probes=Probes(startup="/health", readiness="/ready", liveness="/health", timeout_s=30),
        # srt/arg_groups/fields/serving.py: `api_key`, a flag with no environment variable.
        api_key_env=None,
        unsupported={
            "max_top_logprobs": "SGLang has no limit on top_logprobs to set",
        },
    ),
    EngineKind(
        name="tgi",
        port=3000,
        image="ghcr.io/huggingface/text-generation-inference:3.3.5",
        command=("text-generation-launcher",),
        simulator=("switchyard.enginesim.tgi",),
        flags=_tgi_flags,
        # The router binds only after the shards have loaded and warmed up.
        probes=Probes(startup="/health", readiness="/health", liveness="/health", timeout_s=10),
        # launcher/src/main.rs: `#[clap(long, env)] api_key`, i.e. --api-key or API_KEY.
        api_key_env="API_KEY",
        no_embeddings=_TGI_NO_EMBEDDINGS,
        # launcher/src/main.rs has none of these flags.
        unsupported={
            "tool_call_parser": "TGI has no tool-call parser flag (it always serves tools, "
            "generating calls under its own grammar)",
            "reasoning_parser": "TGI has no reasoning parser",
            "chat_template": "TGI reads a chat template only inside a tokenizer_config.json "
            "(--tokenizer-config-path), and the model's own chat_template.json overrides it",
            "max_images_per_prompt": "TGI has no per-prompt image limit (only --payload-limit "
            "on the request size)",
        },
    ),
)

#: Every engine kind by name, in the order they are listed and started.
ENGINES: Final[Mapping[str, EngineKind]] = MappingProxyType({k.name: k for k in _KINDS})
#: Their names (the CRD's `engine` enum).
NAMES: Final[tuple[str, ...]] = tuple(ENGINES)


def engine_kind(name: str) -> EngineKind:
    """The entry named `name`; ValueError (naming the known ones) for any other."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r} (known: {', '.join(NAMES)})") from None
