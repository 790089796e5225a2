"""OpenAI response bodies and SSE chunks, encoded for the hot path.

Everything that is the same for every chunk of a request (id, created, model, the JSON
around the text) is encoded once per request; a chunk is then one `orjson.dumps` of its
text between two precomputed byte strings. No pydantic on the way out.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from switchyard.inference.v1 import inference_pb2 as pb

Kind = Literal["chat", "completion"]
DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
FINISH_REASONS = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length"}


def usage_dict(usage: pb.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


class Encoder:
    """Encodes one request's response: a whole body, or its stream of SSE chunks."""

    __slots__ = (
        "_finish_prefix",
        "_finish_suffix",
        "_head",
        "_prefix",
        "_suffix",
        "include_usage",
        "kind",
    )

    def __init__(
        self, kind: Kind, response_id: str, model: str, created: int, include_usage: bool
    ) -> None:
        self.kind = kind
        #: Streams: a last chunk with the usage (`stream_options.include_usage`).
        self.include_usage = include_usage
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        self._head = {"id": response_id, "object": obj, "created": created, "model": model}
        head = orjson.dumps(self._head)[:-1]  # without the closing brace
        fingerprint = b',"system_fingerprint":null' if kind == "chat" else b""
        usage = b',"usage":null' if include_usage else b""
        open_text = b'"delta":{"content":' if kind == "chat" else b'"text":'
        close_text = b"}" if kind == "chat" else b""
        self._prefix = b"data: " + head + fingerprint + b',"choices":[{"index":0,' + open_text
        self._suffix = close_text + b',"logprobs":null,"finish_reason":null}]' + usage + b"}\n\n"
        self._finish_prefix = (
            b"data: " + head + fingerprint + b',"choices":[{"index":0,'
            + (b'"delta":{}' if kind == "chat" else b'"text":""')
            + b',"logprobs":null,"finish_reason":'
        )  # fmt: skip
        self._finish_suffix = b"}]" + usage + b"}\n\n"

    def role(self) -> bytes:
        """Chat streams open with the assistant's role (as OpenAI's do)."""
        head = {**self._head, "system_fingerprint": None}
        choice = {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

    def chunk(self, text: str) -> bytes:
        return self._prefix + orjson.dumps(text) + self._suffix

    def finish(self, reason: pb.FinishReason.ValueType) -> bytes:
        return (
            self._finish_prefix
            + orjson.dumps(FINISH_REASONS.get(reason, "stop"))
            + self._finish_suffix
        )

    def usage(self, usage: pb.Usage) -> bytes:
        body: dict[str, Any] = {**self._head, "choices": [], "usage": usage_dict(usage)}
        if self.kind == "chat":
            body["system_fingerprint"] = None
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def whole(self, text: str, reason: pb.FinishReason.ValueType, usage: pb.Usage) -> bytes:
        finish = FINISH_REASONS.get(reason, "stop")
        if self.kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        body = {**self._head, "object": obj, "choices": [choice], "usage": usage_dict(usage)}
        if self.kind == "chat":
            body["system_fingerprint"] = None
        return orjson.dumps(body)
