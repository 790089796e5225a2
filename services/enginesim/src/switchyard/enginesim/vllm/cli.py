"""`vllm serve`'s command line, parsed into a `ServeConfig`.

The flags that shape behaviour (names, limits, context length, KV cache size, headers,
API keys, also from `VLLM_API_KEY`) are honoured; other common vLLM flags are accepted
and ignored, so a `vllm serve` command line from a real deployment runs unchanged against
the simulator.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from switchyard.enginesim.cli import SimOptions, add_sim_arguments, sim_options

VERSION = "0.33.0"
DEFAULT_PORT = 8000
DEFAULT_MAX_MODEL_LEN = 8192
DEFAULT_MAX_NUM_SEQS = 256  # vLLM's OpenAI-server default on GPUs other than H100/H200/B200
DEFAULT_BLOCK_SIZE = 16


@dataclass(frozen=True, slots=True)
class ServeConfig:
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
    tensor_parallel_size: int
    pipeline_parallel_size: int
    data_parallel_size: int
    api_keys: tuple[str, ...]
    enable_request_id_headers: bool
    enable_server_load_tracking: bool
    enable_force_include_usage: bool
    sim: SimOptions

    @property
    def model_name(self) -> str:
        """The name responses and metrics carry: the first served name."""
        return self.served_model_names[0]


def _human_int(text: str) -> int:
    """An integer, optionally with vLLM's k/m/g suffixes (`32k` = 32000, `32K` = 32768)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    number, suffix = match.groups()
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}
    value = float(number) * scale[suffix]
    if value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole number of tokens: {text!r}")
    return int(value)


def _positive(text: str) -> int:
    value = _human_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    value = _human_int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m switchyard.enginesim.vllm",
        description="vLLM's OpenAI-compatible server, simulated on a CPU.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a (simulated) model")
    serve.add_argument("model_tag", nargs="?", help="the model to serve")
    serve.add_argument("--model", help="the model to serve (instead of the positional)")
    serve.add_argument("--served-model-name", nargs="+", default=None)
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--max-model-len", type=_positive, default=DEFAULT_MAX_MODEL_LEN)
    serve.add_argument("--max-num-seqs", type=_positive, default=DEFAULT_MAX_NUM_SEQS)
    serve.add_argument("--max-num-queued-reqs", type=_non_negative, default=None)
    serve.add_argument("--block-size", type=_positive, default=DEFAULT_BLOCK_SIZE)
    serve.add_argument("--num-gpu-blocks-override", type=_positive, default=None)
    serve.add_argument("--gpu-memory-utilization", type=_fraction, default=0.92)
    serve.add_argument("-tp", "--tensor-parallel-size", type=_positive, default=1)
    serve.add_argument("-pp", "--pipeline-parallel-size", type=_positive, default=1)
    serve.add_argument("-dp", "--data-parallel-size", type=_positive, default=1)
    serve.add_argument("--api-key", nargs="+", default=None)
    serve.add_argument("--enable-request-id-headers", action="store_true")
    serve.add_argument("--enable-server-load-tracking", action="store_true")
    serve.add_argument("--enable-force-include-usage", action="store_true")
    # Accepted for compatibility; they change nothing in a simulation.
    for flag in (
        "--dtype", "--seed", "--max-num-batched-tokens", "--generation-config",
        "--uvicorn-log-level", "--otlp-traces-endpoint", "--collect-detailed-traces",
        "--quantization", "--kv-cache-dtype", "--tokenizer", "--revision",
        "--download-dir", "--load-format", "--chat-template", "--tool-call-parser",
        "--reasoning-parser", "--fingerprint-mode", "--swap-space", "--root-path",
    ):  # fmt: skip
        serve.add_argument(flag, default=None)
    for flag in (
        "--disable-fastapi-docs", "--disable-log-requests", "--disable-log-stats",
        "--enable-log-requests", "--trust-remote-code", "--enforce-eager",
        "--enable-prefix-caching", "--no-enable-prefix-caching", "--enable-chunked-prefill",
        "--no-enable-chunked-prefill", "--enable-auto-tool-choice", "--disable-uvicorn-access-log",
    ):  # fmt: skip
        serve.add_argument(flag, action="store_true")
    add_sim_arguments(serve)
    return parser


def api_keys(flag: Sequence[str] | None, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The keys the API prefixes require: `--api-key`, else `VLLM_API_KEY` (empty ones ignored).

    As vLLM's `init_entrypoints_middleware`: the flag wins over the variable entirely.
    """
    return tuple(key for key in (flag or [environ.get("VLLM_API_KEY")]) if key)


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServeConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    model = args.model or args.model_tag
    if not model:
        parser.error("serve: give the model as MODEL or --model")
    names = tuple(args.served_model_name or (model,))
    max_model_len: int = args.max_model_len
    max_num_seqs: int = args.max_num_seqs
    block_size: int = args.block_size
    blocks = args.num_gpu_blocks_override or default_gpu_blocks(
        max_num_seqs, max_model_len, block_size, args.gpu_memory_utilization
    )
    return ServeConfig(
        model=model,
        served_model_names=names,
        host=args.host or "0.0.0.0",  # vLLM's unset host: every interface
        port=args.port,
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        max_num_queued_reqs=args.max_num_queued_reqs,
        block_size=block_size,
        num_gpu_blocks=blocks,
        tensor_parallel_size=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size,
        data_parallel_size=args.data_parallel_size,
        api_keys=api_keys(args.api_key, os.environ if environ is None else environ),
        enable_request_id_headers=args.enable_request_id_headers,
        enable_server_load_tracking=args.enable_server_load_tracking,
        enable_force_include_usage=args.enable_force_include_usage,
        sim=sim_options(args),
    )


def default_gpu_blocks(
    max_num_seqs: int, max_model_len: int, block_size: int, gpu_memory_utilization: float
) -> int:
    """The simulated KV cache: a quarter of `max_num_seqs` full contexts, scaled by the
    memory share, so that a busy simulator shows a KV usage that moves and can fill up."""
    tokens = gpu_memory_utilization * max_num_seqs * max_model_len / 4
    return max(1, math.ceil(tokens / block_size))
