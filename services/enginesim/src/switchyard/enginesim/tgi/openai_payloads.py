"""The OpenAI layer's bodies and chunks, as TGI writes them (`lib.rs`, `chat.rs`).

TGI's quirks kept: `id` is always "", `system_fingerprint` is "<version>-native", every
chat chunk repeats `delta.role: "assistant"` (a special token such as EOS gets
`content: ""`), chunks carry `usage: null` until the separate usage chunk (`choices: []`),
and chat finish reasons are `stop` (EOS), `length` or `stop_sequence`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from switchyard.enginesim.serving import sse_event
from switchyard.enginesim.tgi import VERSION
from switchyard.enginesim.tgi.engine import Outcome
from switchyard.enginesim.tgi.stopping import FinishReason, OutToken

SYSTEM_FINGERPRINT = f"{VERSION}-native"


def openai_finish(reason: FinishReason) -> str:
    """`FinishReason::format(true)`: only EOS is renamed, to "stop"."""
    return "stop" if reason == "eos_token" else reason


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _logprob(token: OutToken, top: Sequence[OutToken]) -> dict[str, Any]:
    return {
        "token": token.text,
        "logprob": token.logprob,
        "top_logprobs": [{"token": t.text, "logprob": t.logprob} for t in top],
    }


def chat_completion(model: str, outcome: Outcome, logprobs: bool) -> dict[str, Any]:
    decoded = outcome.decoded
    content = None
    if logprobs:
        tops = outcome.top_tokens or tuple(() for _ in decoded.tokens)
        content = {
            "content": [_logprob(t, top) for t, top in zip(decoded.tokens, tops, strict=True)]
        }
    return {
        "object": "chat.completion",
        "id": "",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": decoded.text},
                "logprobs": content,
                "finish_reason": openai_finish(decoded.finish_reason),
            }
        ],
        # TGI counts the prompt as its prefill tokens.
        "usage": usage(outcome.valid.input_length, decoded.generated_tokens),
    }


def chat_chunk(
    model: str,
    token: OutToken,
    top: Sequence[OutToken],
    *,
    logprobs: bool,
    finish: FinishReason | None,
) -> bytes:
    choice = {
        "index": 0,
        "delta": {"role": "assistant", "content": "" if token.special else token.text},
        "logprobs": {"content": [_logprob(token, top)]} if logprobs else None,
        "finish_reason": None if finish is None else openai_finish(finish),
    }
    body = {
        "object": "chat.completion.chunk",
        "id": "",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [choice],
        "usage": None,
    }
    return sse_event(orjson.dumps(body), space=False)


def chat_usage_chunk(model: str, outcome: Outcome) -> bytes:
    body = {
        "object": "chat.completion.chunk",
        "id": "",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [],
        "usage": usage(outcome.valid.input_length, outcome.decoded.generated_tokens),
    }
    return sse_event(orjson.dumps(body), space=False)


def completion_choice(index: int, text: str, finish_reason: str) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def completion_final(
    model: str, choices: list[dict[str, Any]], prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return {
        "object": "text_completion",
        "id": "",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    }


def completion_chunk(model: str, index: int, token: OutToken) -> bytes:
    """A streamed completion token: TGI sends its raw text (even EOS) and `finish_reason: ""`."""
    body = {
        "object": "text_completion",
        "id": "",
        "created": int(time.time()),
        "choices": [completion_choice(index, token.text, "")],
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    return sse_event(orjson.dumps(body), space=False)


def completion_last(model: str, index: int, token: OutToken, outcome: Outcome) -> bytes:
    """The last streamed token, as a `CompletionFinal` with TGI's native finish reason."""
    body = completion_final(
        model,
        [completion_choice(index, token.text, outcome.decoded.finish_reason)],
        outcome.valid.input_length,
        outcome.decoded.generated_tokens,
    )
    return sse_event(orjson.dumps(body), space=False)


def done() -> bytes:
    return sse_event(b"[DONE]", space=False)
