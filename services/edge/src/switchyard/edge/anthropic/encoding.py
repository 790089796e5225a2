"""Anthropic `Message` bodies and stream events for one generation (a `GenerationEncoder`).

A stream: `message_start`, a `ping`, then each content block in turn —
`content_block_start`, its `content_block_delta`s (`text_delta`, or `input_json_delta`
with the tool call's arguments as the engine writes them), `content_block_stop` — then
`message_delta` (stop_reason, stop_sequence, usage) and `message_stop`. Blocks never
interleave: text after a tool call opens a new text block, and each tool call is one
`tool_use` block. Engines stream a choice's calls one after another; a fragment for a
call whose block is already closed is an adapter bug (502).

Usage: `message_start` says 0 input tokens (the engine counts them as it goes); the
real counts come in `message_delta`, which the SDK folds into its final message.
Reasoning (an engine's reasoning parser) is not sent: Anthropic's `thinking` blocks carry
a signature the edge cannot make, and `thinking` is not served.
"""

from __future__ import annotations

from typing import Any

import orjson

from switchyard.edge.errors import OpenAIError
from switchyard.inference.v1 import inference_pb2 as pb

_STOP_REASONS = {
    pb.FINISH_REASON_STOP: "end_turn",
    pb.FINISH_REASON_LENGTH: "max_tokens",
    pb.FINISH_REASON_TOOL_CALLS: "tool_use",
}
PING = b'event: ping\ndata: {"type":"ping"}\n\n'


def stop_reason(finish_reason: pb.FinishReason.ValueType, stop_sequence: str, called: bool) -> str:
    """Anthropic's stop_reason: "tool_use" whenever the model called a tool and was not cut
    short (engines finish a named tool choice's call with "stop", as OpenAI does)."""
    if finish_reason == pb.FINISH_REASON_STOP and stop_sequence:
        return "stop_sequence"
    if called and finish_reason != pb.FINISH_REASON_LENGTH:
        return "tool_use"
    return _STOP_REASONS.get(finish_reason, "end_turn")


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _tool_input(call: pb.ToolCall) -> dict[str, Any]:
    """A tool call's arguments as the JSON object Anthropic's `input` is."""
    try:
        value = orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        # Anthropic's input is always an object: passing other text on would break clients.
        raise OpenAIError(
            502,
            f"The model's call of tool '{call.name}' has arguments that are not a JSON object.",
            type="server_error",
            code="backend_error",
            kind="bad_tool_arguments",
        )
    return value


class MessagesEncoder:
    """Encodes one Messages API answer: a whole `Message`, or its stream of events."""

    __slots__ = (
        "_block",
        "_blocks",
        "_calls",
        "_kind",
        "_stop_reason",
        "_stop_sequence",
        "_text_prefix",
        "_usage",
        "choices",
        "message_id",
        "model",
    )

    def __init__(self, message_id: str, model: str) -> None:
        self.message_id = message_id
        self.model = model
        self.choices = 1  # Anthropic has no `n`
        self._blocks = 0  # blocks opened so far
        self._block: int | None = None  # the open block's index
        self._kind = ""  # the open block's type: "text" or "tool_use"
        self._calls: dict[int, int] = {}  # the engine's tool-call index → its block
        self._text_prefix = b""
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None
        self._usage: pb.Usage | None = None

    # -- a stream -----------------------------------------------------------------------------

    def opening(self) -> bytes:
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return event("message_start", {"type": "message_start", "message": message}) + PING

    def _close(self) -> bytes:
        if self._block is None:
            return b""
        index, self._block = self._block, None
        return event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        closed = self._close()
        index = self._block = self._blocks
        self._blocks += 1
        self._kind = kind
        start = {"type": "content_block_start", "index": index, "content_block": block}
        return closed + event("content_block_start", start)

    def text(self, text: str) -> bytes:
        """A text delta (the hot path: two precomputed byte strings around the text)."""
        opened = b""
        if self._block is None or self._kind != "text":
            opened = self._open("text", {"type": "text", "text": ""})
            self._text_prefix = (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
                b'"delta":{"type":"text_delta","text":' % self._current()
            )
        return opened + self._text_prefix + orjson.dumps(text) + b"}}\n\n"

    def _current(self) -> int:
        assert self._block is not None
        return self._block

    def _tool_delta(self, delta: pb.ToolCallDelta) -> bytes:
        out = b""
        if delta.id:
            block = {"type": "tool_use", "id": delta.id, "name": delta.name, "input": {}}
            out = self._open("tool_use", block)
            self._calls[delta.index] = self._current()
        else:
            index = self._calls.get(delta.index)
            if index is None or index != self._block:
                raise OpenAIError(
                    502,
                    "The backend streamed a tool call's arguments out of order.",
                    type="server_error",
                    code="backend_error",
                )
        if delta.arguments_delta:
            data = {
                "type": "content_block_delta",
                "index": self._block,
                "delta": {"type": "input_json_delta", "partial_json": delta.arguments_delta},
            }
            out += event("content_block_delta", data)
        return out

    def delta(self, message: pb.GenerateStreamResponse) -> bytes:
        out = b""
        if message.text_delta:
            out = self.text(message.text_delta)
        for call in message.tool_calls:
            out += self._tool_delta(call)
        return out

    def finish(self, message: pb.GenerateStreamResponse) -> bytes:
        self._stop_reason = stop_reason(
            message.finish_reason, message.stop_sequence, bool(self._calls)
        )
        self._stop_sequence = message.stop_sequence or None
        return self._close()

    def usage(self, usage: pb.Usage) -> bytes:
        self._usage = usage  # sent in message_delta, after the last block
        return b""

    def closing(self) -> bytes:
        usage = self._usage or pb.Usage()
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop_reason, "stop_sequence": self._stop_sequence},
            "usage": {
                "input_tokens": usage.prompt_tokens,
                "output_tokens": usage.completion_tokens,
            },
        }
        return (
            self._close()
            + event("message_delta", delta)
            + event("message_stop", {"type": "message_stop"})
        )

    # -- a whole message ----------------------------------------------------------------------

    def whole(self, response: pb.GenerateResponse) -> bytes:
        choice = (
            response.choices[0]
            if response.choices
            else pb.GeneratedChoice(text=response.text, finish_reason=response.finish_reason)
        )
        content: list[dict[str, Any]] = []
        if choice.text:
            content.append({"type": "text", "text": choice.text})
        content.extend(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": _tool_input(call)}
            for call in choice.tool_calls
        )
        return orjson.dumps(
            {
                "id": self.message_id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": content,
                "stop_reason": stop_reason(
                    choice.finish_reason, choice.stop_sequence, bool(choice.tool_calls)
                ),
                "stop_sequence": choice.stop_sequence or None,
                "usage": {
                    "input_tokens": response.usage.prompt_tokens,
                    "output_tokens": response.usage.completion_tokens,
                },
            }
        )
