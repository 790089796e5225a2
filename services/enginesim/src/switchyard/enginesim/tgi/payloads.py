"""The native API's response bodies and stream events (`router/src/lib.rs` serializations).

Plain dicts serialized with orjson: the per-token path builds one small dict per event.
Fields skipped when empty in TGI (`top_tokens`, `best_of_sequences`, `details` of
`/generate`) are skipped here too; the rest are always present, `null` when unset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from switchyard.enginesim import tokenizer
from switchyard.enginesim.serving import sse_event
from switchyard.enginesim.tgi.engine import Outcome
from switchyard.enginesim.tgi.stopping import OutToken


def details(outcome: Outcome, best_of: Sequence[Outcome] = ()) -> dict[str, Any]:
    """`Details` of a `/generate` response."""
    body: dict[str, Any] = {
        "finish_reason": outcome.decoded.finish_reason,
        "generated_tokens": outcome.decoded.generated_tokens,
        "seed": outcome.seed,
        "prefill": outcome.prefill() if outcome.valid.prefill_logprobs else [],
        "tokens": [t.json() for t in outcome.decoded.tokens],
    }
    if best_of:
        body["best_of_sequences"] = [_sequence(o) for o in best_of]
    if outcome.top_tokens:
        body["top_tokens"] = [[t.json() for t in top] for top in outcome.top_tokens]
    return body


def _sequence(outcome: Outcome) -> dict[str, Any]:
    body = details(outcome)
    body["generated_text"] = outcome.decoded.text
    return body


def generate_response(
    outcome: Outcome, *, prefix: str | None, with_details: bool, best_of: Sequence[Outcome] = ()
) -> dict[str, Any]:
    """`GenerateResponse`; `prefix` is the prompt when `return_full_text`."""
    body: dict[str, Any] = {"generated_text": (prefix or "") + outcome.decoded.text}
    if with_details:
        body["details"] = details(outcome, best_of)
    return body


def stream_details(outcome: Outcome) -> dict[str, Any]:
    """`StreamDetails` of the last stream event."""
    return {
        "finish_reason": outcome.decoded.finish_reason,
        "generated_tokens": outcome.decoded.generated_tokens,
        "seed": outcome.seed,
        "input_length": outcome.valid.input_length,
    }


def stream_event(
    index: int,
    token: OutToken,
    top_tokens: Sequence[OutToken] = (),
    *,
    generated_text: str | None = None,
    details: dict[str, Any] | None = None,
) -> bytes:
    """One `StreamResponse` event, framed as TGI frames it (`data:` without a space)."""
    body: dict[str, Any] = {"index": index, "token": token.json()}
    if top_tokens:
        body["top_tokens"] = [t.json() for t in top_tokens]
    body["generated_text"] = generated_text
    body["details"] = details
    return sse_event(orjson.dumps(body), space=False)


def simple_tokens(text: str) -> list[dict[str, Any]]:
    """`TokenizeResponse`: each token with its character offsets in `text`."""
    out, start = [], 0
    for piece in tokenizer.tokens(text):
        stop = start + len(piece)
        out.append({"id": tokenizer.token_id(piece), "text": piece, "start": start, "stop": stop})
        start = stop
    return out
