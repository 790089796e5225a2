"""The response headers TGI's routes set (`router/src/server.rs`).

A finished generation (`/generate`, the compat route, and the unary chat) carries its
timings and token counts, `x-prompt-tokens` among them: the only place a unary native
answer gives the prompt's length when `details.prefill` is empty (as it is without
`--enable-prefill-logprobs`). Unary `/v1/completions` sums them over its prompts, and
drops `x-compute-time` on the way. Streams carry none of the counts: only the compute
type, the input's length in characters and `X-Accel-Buffering: no`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from switchyard.enginesim.tgi.engine import Outcome


def compute_type() -> str:
    return os.environ.get("COMPUTE_TYPE", "gpu+optimized")


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _counts(received_at: float, outcome: Outcome) -> dict[str, int]:
    """`generate_internal`'s timings (whole milliseconds) and token counts."""
    now = time.perf_counter()
    inference = now - outcome.started_at
    tokens = max(outcome.decoded.generated_tokens, 1)
    return {
        "x-total-time": _ms(now - received_at),
        "x-validation-time": _ms(outcome.validated_s),
        "x-queue-time": _ms(outcome.queued_s),
        "x-inference-time": _ms(inference),
        "x-time-per-token": _ms(inference / tokens),
        "x-prompt-tokens": outcome.valid.input_length,
        "x-generated-tokens": outcome.decoded.generated_tokens,
    }


def generation(received_at: float, outcome: Outcome, characters: int) -> dict[str, str]:
    """The headers of one finished generation (`characters`: the input's length)."""
    counts = {name: str(value) for name, value in _counts(received_at, outcome).items()}
    return {
        "x-compute-type": compute_type(),
        "x-compute-time": f"{time.perf_counter() - received_at}",
        "x-compute-characters": str(characters),
        **counts,
    }


def completions(received_at: float, outcomes: Sequence[Outcome], characters: int) -> dict[str, str]:
    """Unary `/v1/completions`: every count summed over the prompts' generations."""
    sums: dict[str, int] = {}
    for outcome in outcomes:
        for name, value in _counts(received_at, outcome).items():
            sums[name] = sums.get(name, 0) + value
    return {
        "x-compute-type": compute_type(),
        "x-compute-characters": str(characters),
        **{name: str(value) for name, value in sums.items()},
    }


def stream(characters: int) -> dict[str, str]:
    """What a stream's response carries before its first event."""
    return {
        "x-compute-type": compute_type(),
        "x-compute-characters": str(characters),
        "x-accel-buffering": "no",
    }
