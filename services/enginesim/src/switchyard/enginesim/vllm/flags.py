"""`vllm serve`'s command line, parsed into a `Config`.

The flags that shape behaviour (names, limits, context length, KV cache size, headers,
API keys, also from `VLLM_API_KEY`) are honoured; other common vLLM flags are accepted
and ignored, so a `vllm serve` command line from a real deployment runs unchanged against
the simulator.

`--runner pooling` (or a `--convert` other than `auto`/`none`, which implies it, as in
vLLM's `ModelConfig._get_runner_type`) serves the model as an embedding model: vLLM then
registers `/v1/embeddings` and none of the generation routes. A real `--runner auto`
looks at the checkpoint's architecture; the simulator has none, so it means `generate`.
`--hf-overrides` JSON sets the config values vLLM reads for Matryoshka `dimensions`
(`is_matryoshka`, `matryoshka_dimensions`) and the vector length (`embedding_size`;
otherwise `--sim-embedding-dimensions`, the simulated hidden size).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from switchyard.enginesim.flags import (
    SimOptions,
    add_sim_arguments,
    checked,
    from_args,
    new_parser,
)

DEFAULT_MAX_NUM_SEQS = 256  # vLLM's OpenAI-server default on GPUs other than H100/H200/B200
_IGNORED_WITH_VALUE = (
    "--dtype", "--seed", "--max-num-batched-tokens", "--generation-config",
    "--uvicorn-log-level", "--otlp-traces-endpoint", "--collect-detailed-traces",
    "--quantization", "--kv-cache-dtype", "--tokenizer", "--revision",
    "--download-dir", "--load-format", "--chat-template", "--fingerprint-mode",
    "--swap-space", "--root-path",
)  # fmt: skip
_IGNORED_SWITCHES = (
    "--disable-fastapi-docs", "--disable-log-requests", "--disable-log-stats",
    "--enable-log-requests", "--trust-remote-code", "--enforce-eager",
    "--enable-chunked-prefill",
    "--no-enable-chunked-prefill", "--disable-uvicorn-access-log",
)  # fmt: skip
#: Images a prompt may carry unless `--limit-mm-per-prompt` says otherwise (vLLM's 999).
DEFAULT_IMAGE_LIMIT = 999


@dataclass(frozen=True, slots=True)
class Config:
    model: str
    served_model_names: tuple[str, ...]
    host: str
    port: int
    max_model_len: int
    max_num_seqs: int
    #: Cap on unfinished (running + waiting) requests; None: unbounded, vLLM's default.
    max_num_queued_reqs: int | None
    block_size: int
    num_gpu_blocks: int
    #: `--enable-prefix-caching` (vLLM's default) / `--no-enable-prefix-caching`: the
    #: simulated prefix cache holds up to `num_gpu_blocks` blocks of `block_size` tokens.
    enable_prefix_caching: bool
    #: `--enable-prompt-tokens-details`: usage carries `prompt_tokens_details` (cached tokens).
    enable_prompt_tokens_details: bool
    tensor_parallel_size: int
    pipeline_parallel_size: int
    data_parallel_size: int
    api_keys: tuple[str, ...]
    enable_request_id_headers: bool
    enable_server_load_tracking: bool
    enable_force_include_usage: bool
    #: `--tool-call-parser`: the simulated model writes Hermes-format calls, which any
    #: named parser extracts; None: tool_choice other than "none" is refused.
    tool_call_parser: str | None
    enable_auto_tool_choice: bool
    #: `--reasoning-parser`: the model reasons first, returned apart as `reasoning`.
    reasoning_parser: str | None
    #: Most logprobs a request may ask per token (`--max-logprobs`; -1: the vocabulary).
    max_logprobs: int
    #: Most images per prompt (`--limit-mm-per-prompt`), for a multimodal model.
    image_limit: int
    sim: SimOptions
    #: `--runner`, resolved: "pooling" serves embeddings, "generate" text.
    runner: Literal["generate", "pooling"] = "generate"
    #: `--hf-overrides`: the model config values the simulator reads (see the module).
    hf_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        """The name responses and metrics carry: the first served name."""
        return self.served_model_names[0]

    @property
    def pooling(self) -> bool:
        """An embedding model (`--runner pooling`)."""
        return self.runner == "pooling"

    @property
    def matryoshka_dimensions(self) -> list[int] | None:
        """The dimensions a request may ask for (`ModelConfig.matryoshka_dimensions`)."""
        value = self.hf_overrides.get("matryoshka_dimensions")
        return list(value) if value else None

    @property
    def is_matryoshka(self) -> bool:
        """Whether requests may shorten vectors (`ModelConfig.is_matryoshka`)."""
        return bool(self.matryoshka_dimensions) or bool(self.hf_overrides.get("is_matryoshka"))

    @property
    def embedding_size(self) -> int:
        """The length of the model's vectors (`ModelConfig.embedding_size`)."""
        size = self.hf_overrides.get("embedding_size")
        return size if isinstance(size, int) else self.sim.embedding_dimensions


def _tokens(low: int) -> Callable[[str], int]:
    """An integer of at least `low`, optionally with vLLM's k/m/g suffixes (`32k` = 32000,
    `32K` = 32768)."""

    def parse(text: str) -> int:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)", text.strip())
        if match is None:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
        number, suffix = match.groups()
        scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}
        value = float(number) * scale[suffix]
        if value != int(value):
            raise argparse.ArgumentTypeError(f"not a whole number of tokens: {text!r}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text!r}")
        return int(value)

    return parse


_fraction = checked(float, lambda value: 0 < value <= 1, "in (0, 1]")


def parser() -> argparse.ArgumentParser:
    root = new_parser("vllm", "vLLM's OpenAI-compatible server, simulated on a CPU.")
    serve = root.add_subparsers(dest="command", required=True).add_parser(
        "serve", help="serve a (simulated) model"
    )
    add = serve.add_argument
    add("model_tag", nargs="?", help="the model to serve")
    add("--model", help="the model to serve (instead of the positional)")
    add("--served-model-name", nargs="+", default=None)
    add("--host", default=None)
    add("--port", type=int, default=8000)
    add("--max-model-len", type=_tokens(1), default=8192)
    add("--max-num-seqs", type=_tokens(1), default=DEFAULT_MAX_NUM_SEQS)
    add("--max-num-queued-reqs", type=_tokens(0), default=None)
    add("--block-size", type=_tokens(1), default=16)
    add("--num-gpu-blocks-override", type=_tokens(1), default=None)
    add("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True)
    add("--enable-prompt-tokens-details", action="store_true")
    add("--gpu-memory-utilization", type=_fraction, default=0.92)
    add("-tp", "--tensor-parallel-size", type=_tokens(1), default=1)
    add("-pp", "--pipeline-parallel-size", type=_tokens(1), default=1)
    add("-dp", "--data-parallel-size", type=_tokens(1), default=1)
    add("--api-key", nargs="+", default=None)
    add("--enable-request-id-headers", action="store_true")
    add("--enable-server-load-tracking", action="store_true")
    add("--enable-force-include-usage", action="store_true")
    add("--tool-call-parser", default=None)
    add("--enable-auto-tool-choice", action="store_true")
    add("--reasoning-parser", default=None)
    add("--max-logprobs", type=checked(int, lambda value: value >= -1, "at least -1"), default=20)
    add("--limit-mm-per-prompt", type=_mm_limits, default={})
    add("--runner", choices=("auto", "generate", "pooling"), default="auto")
    add("--convert", choices=("auto", "none", "embed", "classify"), default="auto")
    add("--hf-overrides", type=_hf_overrides, default={})
    for flag in _IGNORED_WITH_VALUE:  # accepted; they change nothing in a simulation
        add(flag, default=None)
    for flag in _IGNORED_SWITCHES:
        add(flag, action="store_true")
    add_sim_arguments(serve)
    return root


def _mm_limits(text: str) -> dict[str, int]:
    """`--limit-mm-per-prompt`: JSON, `{"image": 2}` (a modality's options object: its count)."""
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    limits: dict[str, int] = {}
    for modality, limit in value.items():
        count = limit.get("count") if isinstance(limit, dict) else limit
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise argparse.ArgumentTypeError(f"{modality}: not a count: {limit!r}")
        limits[modality] = count
    return limits


def _hf_overrides(text: str) -> dict[str, Any]:
    """`--hf-overrides`: a JSON object; the keys the simulator reads are checked."""
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    dims = value.get("matryoshka_dimensions")
    if dims is not None and not (isinstance(dims, list) and all(_positive_int(d) for d in dims)):
        raise argparse.ArgumentTypeError(f"matryoshka_dimensions: not a list of sizes: {dims!r}")
    size = value.get("embedding_size")
    if size is not None and not _positive_int(size):
        raise argparse.ArgumentTypeError(f"embedding_size: not a size: {size!r}")
    return value


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _runner(args: argparse.Namespace) -> Literal["generate", "pooling"]:
    """`ModelConfig._get_runner_type` without a checkpoint: a conversion implies pooling."""
    if args.runner != "auto":
        return "pooling" if args.runner == "pooling" else "generate"
    return "generate" if args.convert in ("auto", "none") else "pooling"


def api_keys(flag: Sequence[str] | None, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The keys the API prefixes require: `--api-key`, else `VLLM_API_KEY` (empty ones ignored).

    As vLLM's `init_entrypoints_middleware`: the flag wins over the variable entirely.
    """
    return tuple(key for key in (flag or [environ.get("VLLM_API_KEY", "")]) if key)


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    p = parser()
    args = p.parse_args(argv)
    model = args.model or args.model_tag
    if not model:
        p.error("serve: give the model as MODEL or --model")
    if args.enable_auto_tool_choice and not args.tool_call_parser:
        p.error("--enable-auto-tool-choice requires --tool-call-parser")  # vLLM: a TypeError
    runner = _runner(args)
    if runner == "pooling" and args.convert == "classify":
        p.error("--convert classify: the simulator serves embedding models only")
    # The simulated KV cache: a quarter of `max_num_seqs` full contexts, scaled by the
    # memory share, so that a busy simulator shows a KV usage that moves and can fill up.
    kv_tokens = args.gpu_memory_utilization * args.max_num_seqs * args.max_model_len / 4
    return from_args(
        Config, args, model=model, served_model_names=tuple(args.served_model_name or (model,)),
        host=args.host or "0.0.0.0",  # vLLM's unset host: every interface
        num_gpu_blocks=args.num_gpu_blocks_override or max(1, math.ceil(kv_tokens / args.block_size)),
        api_keys=api_keys(args.api_key, os.environ if environ is None else environ),
        image_limit=args.limit_mm_per_prompt.get("image", DEFAULT_IMAGE_LIMIT),
        runner=runner,
    )  # fmt: skip
