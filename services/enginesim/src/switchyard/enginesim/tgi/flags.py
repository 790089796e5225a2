"""The `text-generation-launcher` command line, as far as a simulator needs it.

Flags keep TGI's names, defaults and environment variables (clap's `env`), and the
launcher's start-up checks. Flags that only matter on a GPU are accepted and ignored,
so a real TGI command line runs the simulator unchanged.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from switchyard.enginesim.flags import (
    SimOptions,
    add_sim_arguments,
    from_args,
    new_parser,
    positive_seconds,
)

log = logging.getLogger("switchyard.enginesim.tgi")

DEFAULT_MODEL_CONTEXT: Final = 4096
"""The simulated model's context length, TGI's default `--max-total-tokens` for it."""
# GPU, sharding and download flags: taken (with a value) and ignored.
_IGNORED_WITH_VALUE: Final = (
    "--revision", "--num-shard", "--quantize", "--speculate", "--dtype", "--kv-cache-dtype",
    "--max-batch-prefill-tokens", "--max-waiting-tokens",
    "--waiting-served-ratio", "--cuda-memory-fraction", "--cuda-graphs", "--rope-scaling",
    "--rope-factor", "--otlp-endpoint", "--otlp-service-name", "--shard-uds-path",
    "--master-addr", "--master-port", "--huggingface-hub-cache", "--weights-cache-override",
    "--watermark-gamma", "--watermark-delta", "--tokenizer-config-path", "--lora-adapters",
    "--usage-stats", "--cors-allow-origin", "--env",
)  # fmt: skip
_IGNORED_SWITCHES: Final = (
    "--sharded", "--trust-remote-code", "--disable-custom-kernels", "--json-output",
    "--disable-usage-stats", "--disable-crash-reports", "--ngrok",
)  # fmt: skip
#: clap's spellings of false for a boolean flag's environment variable.
_FALSE: Final = frozenset({"", "0", "n", "no", "f", "false", "off"})
#: `ATTENTION` (the launcher's environment) and its KV block size (`models/globals.py`).
BLOCK_SIZES: Final = {"flashinfer": 1, "flashdecoding": 256, "flashdecoding-ipex": 64, "paged": 16}
#: The attentions that support prefix caching (`models/globals.py`).
_PREFIX_ATTENTIONS: Final = frozenset({"flashinfer", "flashdecoding", "flashdecoding-ipex"})


@dataclass(frozen=True, slots=True)
class Config:
    model_id: str
    hostname: str
    port: int
    max_concurrent_requests: int
    max_best_of: int
    max_stop_sequences: int
    max_top_n_tokens: int
    max_input_tokens: int
    max_total_tokens: int
    max_client_batch_size: int
    max_batch_size: int | None
    payload_limit: int
    disable_grammar_support: bool
    api_key: str | None
    #: Without it the shards drop prompt logprobs: `details.prefill` stays empty.
    enable_prefill_logprobs: bool
    prometheus_port: int | None
    keep_alive_s: float
    validation_workers: int
    sim: SimOptions
    #: `ATTENTION`: the launcher's choice (flashinfer unless the model or env says otherwise).
    attention: str = "flashinfer"
    #: `PREFIX_CACHING`: the launcher's default is on, except with paged attention.
    prefix_caching: bool = True
    #: `--max-batch-total-tokens`: the KV cache in tokens (TGI infers it from GPU memory;
    #: the simulator, unset: every permitted request at full length). Sizes the prefix cache.
    max_batch_total_tokens: int | None = None

    @property
    def block_size(self) -> int:
        """Tokens per KV block, the prefix cache's unit of reuse."""
        return BLOCK_SIZES[self.attention]

    @property
    def kv_cache_tokens(self) -> int:
        return self.max_batch_total_tokens or self.max_total_tokens * self.max_concurrent_requests

    @property
    def max_running(self) -> int:
        """Requests decoded together (the batch); the rest of the admitted ones queue."""
        if self.max_batch_size:
            return min(self.max_batch_size, self.max_concurrent_requests)
        return self.max_concurrent_requests


def parser() -> argparse.ArgumentParser:
    p = new_parser("tgi", "Text Generation Inference, simulated on a CPU (launcher flags).")
    add, env = p.add_argument, os.environ.get
    add("--model-id", default=env("MODEL_ID", "bigscience/bloom-560m"))
    add("--hostname", default=env("HOSTNAME", "0.0.0.0"))
    add("-p", "--port", type=int, default=int(env("PORT") or 3000))
    add("--max-concurrent-requests", type=int, default=int(env("MAX_CONCURRENT_REQUESTS") or 128))
    add("--max-best-of", type=int, default=2)
    add("--max-stop-sequences", type=int, default=4)
    add("--max-top-n-tokens", type=int, default=5)
    add("--max-input-tokens", "--max-input-length", type=int, default=None)
    add("--max-total-tokens", type=int, default=None)
    add("--max-batch-size", type=int, default=None)
    add("--max-client-batch-size", type=int, default=4)
    add("--payload-limit", type=int, default=2_000_000)
    add("--validation-workers", type=int, default=2)
    add("--disable-grammar-support", action="store_true")
    add("--api-key", default=env("API_KEY"))
    total = env("MAX_BATCH_TOTAL_TOKENS")
    add("--max-batch-total-tokens", type=int, default=int(total) if total else None)
    prefill = env("ENABLE_PREFILL_LOGPROBS", "").strip().lower() not in _FALSE
    add("--enable-prefill-logprobs", action="store_true", default=prefill)
    add(
        "--prometheus-port", type=int, default=None,
        help="also serve /metrics on this port (TGI: 9000; here off unless given, so "
        "simulators can share a host)",
    )  # fmt: skip
    for flag in _IGNORED_WITH_VALUE:
        add(flag, default=None, help=argparse.SUPPRESS)
    for flag in _IGNORED_SWITCHES:
        add(flag, action="store_true", help=argparse.SUPPRESS)
    add_sim_arguments(p)
    add(
        "--sim-keep-alive", type=positive_seconds, default=15.0, metavar="S",
        help="seconds of silence before an SSE keep-alive comment (axum's default: 15)",
    )  # fmt: skip
    return p


def parse(argv: Sequence[str] | None = None) -> Config:
    """The configuration, or exit 2 with the launcher's message for a bad combination."""
    p = parser()
    args = p.parse_args(argv)
    max_total, max_input = args.max_total_tokens, args.max_input_tokens
    if max_total is None:
        max_total = max(DEFAULT_MODEL_CONTEXT, (max_input or 0) + 1)
    if max_input is None:
        max_input = max_total - 1
    if max_input >= max_total:
        p.error(f"`max_input_tokens`({max_input}) must be < `max_total_tokens`({max_total})")
    if args.max_batch_prefill_tokens is not None and int(args.max_batch_prefill_tokens) < max_input:
        p.error(
            f"`max_batch_prefill_tokens` ({args.max_batch_prefill_tokens}) must be >= "
            f"`max_input_tokens` ({max_input})"
        )
    for name in ("max_concurrent_requests", "max_stop_sequences", "max_client_batch_size"):
        if getattr(args, name) < (0 if name == "max_stop_sequences" else 1):
            p.error(f"--{name.replace('_', '-')} is out of range: {getattr(args, name)}")
    if args.max_best_of < 1:
        p.error(f"--max-best-of must be at least 1, got {args.max_best_of}")
    batch_total = args.max_batch_total_tokens
    if batch_total is not None and args.max_total_tokens is not None and max_total > batch_total:
        p.error(
            "`max_total_tokens` must be <= `max_batch_total_tokens`. "
            f"Given: {max_total} and {batch_total}"
        )
    attention, prefix_caching = _attention(p, vlm=args.sim_multimodal)
    return from_args(
        Config, args, hostname=_bind_address(args.hostname), max_input_tokens=max_input,
        max_total_tokens=max_total, keep_alive_s=args.sim_keep_alive, attention=attention,
        prefix_caching=prefix_caching,
    )  # fmt: skip


def _attention(p: argparse.ArgumentParser, *, vlm: bool) -> tuple[str, bool]:
    """`ATTENTION` and `PREFIX_CACHING` as the launcher resolves them (`resolve_attention`:
    off for a vision model or paged attention unless set) and the server checks them
    (`models/globals.py`)."""
    attention = os.environ.get("ATTENTION") or "flashinfer"
    if attention not in BLOCK_SIZES:
        p.error(f"Attention is not valid {attention}, expected {sorted(BLOCK_SIZES)}")
    flag = os.environ.get("PREFIX_CACHING")
    if flag is None:
        flag = "0" if vlm or attention == "paged" else "true"
    prefix_caching = flag.lower() in {"1", "true"}
    if prefix_caching and attention not in _PREFIX_ATTENTIONS:
        p.error("Prefix caching is only supported with flashinfer")
    return attention, prefix_caching


def _bind_address(hostname: str) -> str:
    # The router parses the hostname as an IP address and falls back to all interfaces
    # (in a pod, HOSTNAME is the pod's name).
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        log.warning("Invalid hostname %r, defaulting to 0.0.0.0", hostname)
        return "0.0.0.0"
    return hostname
