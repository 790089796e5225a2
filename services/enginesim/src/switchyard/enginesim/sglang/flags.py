"""The command line of `python -m sglang.launch_server`, as far as the simulator honours it.

Flags keep SGLang's names and defaults (`srt/arg_groups/fields/`); flags that only tune a
GPU (`--tp-size`, `--mem-fraction-static`, ...) are accepted and ignored, so the same
command line starts the real engine or the simulator. Unknown flags are refused, as
SGLang refuses them. SGLang reads its API keys from the command line only.

The simulated model writes Qwen's formats: reasoning in `<think>...</think>`, tool calls in
`<tool_call>` blocks. The parser flags therefore take the names of SGLang's parsers that
read those formats; SGLang's other names are refused like an unknown name. A real model's
checkpoint says whether it reads images (SGLang's `--enable-multimodal` only turns a
vision model's support off or on): here the shared `--sim-multimodal` says so.

`--is-embedding` serves the model as an embedding model (`/model_info` `is_generation`
false, `/v1/embeddings` and `/encode`); its hidden size, the length of its vectors, is the
shared `--sim-embedding-dimensions`. `--json-model-override-args` overrides the model's
config.json, as SGLang does: `is_matryoshka` / `matryoshka_dimensions` there decide which
`dimensions` a request may ask for.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from switchyard.enginesim.flags import (
    SimOptions,
    add_sim_arguments,
    at_least,
    checked,
    from_args,
    new_parser,
    seconds,
)

#: The simulated model's own context length (its config.json), used without --context-length.
MODEL_CONTEXT_LENGTH: Final = 8192
#: Requests generating at once when --max-running-requests is not given.
DEFAULT_MAX_RUNNING: Final = 256
#: Seconds after a stream's end before SGLang aborts its rid (`create_abort_task`).
STREAM_END_ABORT_DELAY_S: Final = 2.0
#: `--tool-call-parser` values whose detector reads the simulated model's `<tool_call>` blocks.
TOOL_CALL_PARSERS: Final = ("hermes", "qwen", "qwen25")
#: `--reasoning-parser` values whose detector reads `<think>...</think>`; `qwen3` thinks
#: unless `chat_template_kwargs.enable_thinking` is false, the others always think.
REASONING_PARSERS: Final = ("deepseek-r1", "qwen3", "qwen3-thinking")


@dataclass(frozen=True, slots=True)
class Config:
    model_path: str
    served_model_name: str
    host: str
    port: int
    context_length: int
    #: Whether --context-length was given (SGLang checks chat max_completion_tokens only then).
    context_length_set: bool
    max_running_requests: int
    max_queued_requests: int | None
    max_total_tokens: int
    enable_metrics: bool
    incremental_streaming_output: bool
    allow_auto_truncate: bool
    stream_response_default_include_usage: bool
    enable_cache_report: bool
    enable_trace: bool
    #: Whether `sampling_seed` counts (SGLang ignores it otherwise).
    enable_deterministic_inference: bool
    tp_size: int
    mem_fraction_static: float | None
    sim: SimOptions
    #: Simulator only: the delay of SGLang's abort after a stream's end (2 s in SGLang).
    abort_delay_s: float = STREAM_END_ABORT_DELAY_S
    #: The bearer token every route but the probes needs; None or "": none.
    api_key: str | None = None
    #: The bearer token of the admin routes (`/abort_request`), instead of `api_key`.
    admin_api_key: str | None = None
    #: `--tool-call-parser`: None leaves tool calls in the text (SGLang parses none then).
    tool_call_parser: str | None = None
    #: `--reasoning-parser`: None, and the model does not think.
    reasoning_parser: str | None = None
    #: `--limit-mm-data-per-request`, e.g. {"image": 2}: most items of a modality per request.
    limit_mm_data_per_request: Mapping[str, int] | None = None
    #: `--is-embedding`: the model embeds (`/v1/embeddings`, `/encode`) instead of generating.
    is_embedding: bool = False
    #: `--json-model-override-args`: keys of the model's config.json, overridden.
    json_model_override_args: Mapping[str, Any] = field(default_factory=dict)
    #: `--page-size`: tokens per KV page, the radix cache's unit of reuse.
    page_size: int = 1
    #: `--disable-radix-cache`: no prefix reuse; every prompt token is prefilled.
    disable_radix_cache: bool = False

    @property
    def multimodal(self) -> bool:
        """Whether the model reads images (`--sim-multimodal`)."""
        return self.sim.multimodal

    @property
    def is_generation(self) -> bool:
        """`ModelConfig.is_generation`: the simulated checkpoint is a causal LM, so only
        `--is-embedding` makes it an embedding model."""
        return not self.is_embedding

    @property
    def hidden_size(self) -> int:
        """The model's hidden size: the length of its embeddings."""
        return self.sim.embedding_dimensions

    @property
    def matryoshka_dimensions(self) -> list[int] | None:
        """config.json's `matryoshka_dimensions` (None: any up to the hidden size)."""
        value = self.json_model_override_args.get("matryoshka_dimensions")
        return list(value) if isinstance(value, list) else None

    @property
    def is_matryoshka(self) -> bool:
        """`ModelConfig.is_matryoshka`: `matryoshka_dimensions` or `is_matryoshka`."""
        return bool(
            self.matryoshka_dimensions or self.json_model_override_args.get("is_matryoshka")
        )


_port = checked(int, lambda value: 0 <= value <= 65535, "a port")


def _mm_limits(text: str) -> dict[str, int]:
    """`--limit-mm-data-per-request`: a JSON object of modality → count, as SGLang checks it."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r}") from None
    if not isinstance(value, dict) or not all(isinstance(v, int) for v in value.values()):
        raise argparse.ArgumentTypeError(f'must be an object like {{"image": 1}}, got {text!r}')
    allowed = ["image", "video", "audio"]
    for modality in value:
        if modality not in allowed:  # SGLang's words, its missing space included
            raise argparse.ArgumentTypeError(
                f"Invalid modality '{modality}' in --limit-mm-data-per-request."
                f"Allowed modalities are: {allowed}"
            )
    return value


def _override_args(text: str) -> dict[str, Any]:
    """`--json-model-override-args`: a JSON object (SGLang fails to start on anything else)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    # SGLang takes any value and fails the requests that read it; refused at start here.
    dims = value.get("matryoshka_dimensions")
    if dims is not None and not (
        isinstance(dims, list) and all(isinstance(d, int) and d > 0 for d in dims)
    ):
        raise argparse.ArgumentTypeError(
            f"matryoshka_dimensions must be a list of positive integers, got {dims!r}"
        )
    return value


def parser() -> argparse.ArgumentParser:
    p = new_parser("sglang", "SGLang's HTTP API served by a CPU simulator.", allow_abbrev=False)
    add = p.add_argument
    add("--model-path", "--model", required=True, help="the model to 'load' (a name)")
    add("--tokenizer-path", default=None, help="accepted; the simulator has one tokenizer")
    add("--served-model-name", default=None, help="the name in /v1/models (default: model path)")
    add("--host", default="127.0.0.1")
    add("--port", type=_port, default=30000)
    add("--context-length", type=at_least(1), default=None, help="the model's context length")
    add("--max-running-requests", type=at_least(1), default=None)
    add("--max-queued-requests", type=at_least(0), default=None, help="default: unlimited")
    add("--max-total-tokens", type=at_least(1), default=None, help="KV-cache pool in tokens")
    add("--enable-metrics", action="store_true", help="serve Prometheus metrics at /metrics")
    add("--page-size", type=at_least(1), default=1, help="tokens per KV-cache page")
    add("--disable-radix-cache", action="store_true", help="no prefix (radix) cache")
    add("--incremental-streaming-output", action="store_true", help="native streams send deltas")
    add("--allow-auto-truncate", action="store_true", help="truncate over-long prompts")
    add("--stream-response-default-include-usage", action="store_true")
    add("--enable-cache-report", action="store_true")
    add("--enable-trace", action="store_true", help="accepted; requests' traceparent is recorded")
    add(
        "--enable-deterministic-inference", action="store_true",
        help="sample with each request's sampling_seed (42 without one); ignored otherwise",
    )  # fmt: skip
    add(
        "--tool-call-parser", choices=TOOL_CALL_PARSERS, default=None,
        help="parse the model's tool calls into `tool_calls` (without: they stay in the text)",
    )  # fmt: skip
    add(
        "--reasoning-parser", choices=REASONING_PARSERS, default=None,
        help="the model thinks first; its reasoning is returned as `reasoning_content`",
    )  # fmt: skip
    add("--chat-template", default=None, help="accepted; the simulated model has one template")
    add("--enable-multimodal", action="store_true", help="accepted; see --sim-multimodal")
    add(
        "--limit-mm-data-per-request", type=_mm_limits, default=None, metavar="JSON",
        help='most multimodal items per request, e.g. \'{"image": 1}\'',
    )  # fmt: skip
    add("--is-embedding", action="store_true", help="serve the model as an embedding model")
    add(
        "--json-model-override-args", type=_override_args, default="{}", metavar="JSON",
        help='override the model\'s config, e.g. \'{"matryoshka_dimensions": [128, 256]}\'',
    )  # fmt: skip
    add("--api-key", default=None, help="require this bearer token (probes stay open)")
    add("--admin-api-key", default=None, help="the bearer token of the admin routes")
    add("--otlp-traces-endpoint", default="localhost:4317", help="accepted and ignored")
    add("--tp-size", "--tensor-parallel-size", type=at_least(1), default=1, help="ignored")
    add("--mem-fraction-static", type=float, default=None, help="ignored")
    for flag in ("--trust-remote-code", "--skip-server-warmup"):
        add(flag, action="store_true", help="ignored")
    add("--dtype", default="auto", help="ignored")
    add("--log-level", default="info", help="ignored")
    add_sim_arguments(p)
    add(
        "--sim-abort-delay", type=seconds, default=STREAM_END_ABORT_DELAY_S, metavar="S",
        help="simulator only: seconds after a stream's end before its rid is aborted "
        f"(SGLang: {STREAM_END_ABORT_DELAY_S:g})",
    )  # fmt: skip
    return p


def parse(argv: Sequence[str] | None = None) -> Config:
    args = parser().parse_args(argv)
    max_running: int = args.max_running_requests or DEFAULT_MAX_RUNNING
    context_length: int = args.context_length or MODEL_CONTEXT_LENGTH
    return from_args(
        Config, args, served_model_name=args.served_model_name or args.model_path,
        context_length=context_length, context_length_set=args.context_length is not None,
        max_running_requests=max_running,
        # Enough KV cache for every running request at full length, unless told otherwise.
        max_total_tokens=args.max_total_tokens or context_length * max_running,
        abort_delay_s=args.sim_abort_delay,
    )  # fmt: skip
