"""OpenAI response bodies and SSE chunks, encoded for the hot path.

Everything that is the same for every chunk of a request (id, created, model, the JSON
around the text) is encoded once per request; a plain text chunk is then one `orjson.dumps`
of its text between two precomputed byte strings. Chunks that carry more (tool calls,
reasoning, logprobs) are encoded whole. No pydantic on the way out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import orjson

from switchyard.inference.v1 import inference_pb2 as pb

Kind = Literal["chat", "completion"]
DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
FINISH_REASONS = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_TOOL_CALLS: "tool_calls",
}


def usage_dict(usage: pb.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _token_bytes(lp: pb.TokenLogprob) -> list[int]:
    return list(lp.bytes or lp.token.encode())


def chat_logprob(lp: pb.TokenLogprob) -> dict[str, Any]:
    """One token of a chat choice's `logprobs.content`."""
    return {
        "token": lp.token,
        "logprob": lp.logprob,
        "bytes": _token_bytes(lp),
        "top_logprobs": [
            {"token": t.token, "logprob": t.logprob, "bytes": _token_bytes(t)}
            for t in lp.top_logprobs
        ],
    }


def completion_logprobs(
    logprobs: Sequence[pb.TokenLogprob], offset: int
) -> tuple[dict[str, Any], int]:
    """A text completion's `logprobs` object for these tokens, their text starting at
    `offset`; and the offset after them."""
    offsets = []
    for lp in logprobs:
        offsets.append(offset)
        offset += len(lp.token)
    body = {
        "tokens": [lp.token for lp in logprobs],
        "token_logprobs": [lp.logprob for lp in logprobs],
        "top_logprobs": [{t.token: t.logprob for t in lp.top_logprobs} for lp in logprobs],
        "text_offset": offsets,
    }
    return body, offset


def tool_call_delta(delta: pb.ToolCallDelta) -> dict[str, Any]:
    """OpenAI's stream shape: a call's first fragment has its id, type and name (and maybe
    the start of its arguments); the later ones only continue the arguments."""
    if delta.id:
        function = {"name": delta.name, "arguments": delta.arguments_delta}
        return {"index": delta.index, "id": delta.id, "type": "function", "function": function}
    return {"index": delta.index, "function": {"arguments": delta.arguments_delta}}


class Encoder:
    """Encodes one chat or completions response (a `GenerationEncoder`): a whole body, or
    its stream of SSE chunks.

    Plain text chunks (the hot path) are two precomputed byte strings around the text;
    everything else in a stream (tool calls, reasoning, logprobs) is encoded as a dict.
    """

    __slots__ = (
        "_finish_prefix",
        "_finish_suffix",
        "_head",
        "_offsets",
        "_prefixes",
        "_suffix",
        "_usage_null",
        "choices",
        "include_usage",
        "kind",
        "logprobs",
    )

    def __init__(
        self,
        kind: Kind,
        response_id: str,
        model: str,
        created: int,
        include_usage: bool,
        choices: int = 1,
        logprobs: bool = False,
    ) -> None:
        self.kind = kind
        #: Streams: a last chunk with the usage (`stream_options.include_usage`).
        self.include_usage = include_usage
        self.choices = choices
        #: Logprobs were asked for: every choice and chunk carries them.
        self.logprobs = logprobs
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        self._head: dict[str, Any] = {
            "id": response_id,
            "object": obj,
            "created": created,
            "model": model,
        }
        if kind == "chat":
            self._head["system_fingerprint"] = None
        head = orjson.dumps(self._head)[:-1]  # without the closing brace
        self._usage_null = include_usage
        usage = b',"usage":null' if include_usage else b""
        close_text = b"}" if kind == "chat" else b""
        self._prefixes: list[bytes | None] = [None] * choices
        self._suffix = close_text + b',"logprobs":null,"finish_reason":null}]' + usage + b"}\n\n"
        # Around the choice's index (never %-formatted: the model name may hold a "%").
        self._finish_prefix = (
            b"data: " + head + b',"choices":[{"index":',
            b"," + (b'"delta":{}' if kind == "chat" else b'"text":""')
            + b',"logprobs":null,"finish_reason":',
        )  # fmt: skip
        self._finish_suffix = b"}]" + usage + b"}\n\n"
        #: Text completions with logprobs: each choice's text_offset so far.
        self._offsets = [0] * choices

    def _prefix(self, index: int) -> bytes:
        prefix = self._prefixes[index]
        if prefix is None:
            head = orjson.dumps(self._head)[:-1]
            open_text = b'"delta":{"content":' if self.kind == "chat" else b'"text":'
            prefix = b"data: " + head + b',"choices":[{"index":%d,' % index + open_text
            self._prefixes[index] = prefix
        return prefix

    def _event(self, choice: dict[str, Any]) -> bytes:
        body: dict[str, Any] = {**self._head, "choices": [choice]}
        if self._usage_null:
            body["usage"] = None
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def opening(self) -> bytes:
        """Chat streams open with the assistant's role, for each choice (as OpenAI's do)."""
        if self.kind != "chat":
            return b""
        return b"".join(
            self._event(
                {
                    "index": index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            )
            for index in range(self.choices)
        )

    def chunk(self, text: str, index: int = 0) -> bytes:
        """A chunk of plain text (the hot path)."""
        return self._prefix(index) + orjson.dumps(text) + self._suffix

    def delta(self, message: pb.GenerateStreamResponse) -> bytes:
        """A chunk for whatever `message` adds to its choice (b"" for nothing)."""
        if self.logprobs or message.reasoning_delta or message.tool_calls:
            return self._rich(message)
        text = message.text_delta
        return self.chunk(text, message.index) if text else b""

    def _rich(self, message: pb.GenerateStreamResponse) -> bytes:
        """Tool calls, reasoning or logprobs: encoded whole."""
        if not (
            message.text_delta or message.reasoning_delta or message.tool_calls or message.logprobs
        ):
            return b""
        logprobs: dict[str, Any] | None = None
        if self.kind == "completion":
            if self.logprobs:
                logprobs, self._offsets[message.index] = completion_logprobs(
                    message.logprobs, self._offsets[message.index]
                )
            choice = {"index": message.index, "text": message.text_delta}
        else:
            delta: dict[str, Any] = {}
            if message.reasoning_delta:
                delta["reasoning_content"] = message.reasoning_delta
            if message.text_delta:
                delta["content"] = message.text_delta
            if message.tool_calls:
                delta["tool_calls"] = [tool_call_delta(d) for d in message.tool_calls]
            if self.logprobs:
                logprobs = {"content": [chat_logprob(lp) for lp in message.logprobs]}
            choice = {"index": message.index, "delta": delta}
        choice |= {"logprobs": logprobs, "finish_reason": None}
        return self._event(choice)

    def finish(self, message: pb.GenerateStreamResponse) -> bytes:
        before, after = self._finish_prefix
        return (
            before
            + b"%d" % message.index
            + after
            + orjson.dumps(FINISH_REASONS.get(message.finish_reason, "stop"))
            + self._finish_suffix
        )

    def usage(self, usage: pb.Usage) -> bytes:
        """The usage chunk, only when the client asked for it (`include_usage`)."""
        if not self.include_usage:
            return b""
        body: dict[str, Any] = {**self._head, "choices": [], "usage": usage_dict(usage)}
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def closing(self) -> bytes:
        return DONE

    def whole(self, response: pb.GenerateResponse) -> bytes:
        """A whole (unary) response: every choice, and the usage summed over them."""
        choices = response.choices or [
            pb.GeneratedChoice(text=response.text, finish_reason=response.finish_reason)
        ]
        if self.kind == "chat":
            body = [self._chat_choice(c) for c in choices]
            obj = "chat.completion"
        else:
            body = [self._completion_choice(c) for c in choices]
            obj = "text_completion"
        return orjson.dumps(
            {**self._head, "object": obj, "choices": body, "usage": usage_dict(response.usage)}
        )

    def _chat_choice(self, choice: pb.GeneratedChoice) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant"}
        # Only tool calls: no content at all (null), as OpenAI answers.
        message["content"] = None if choice.tool_calls and not choice.text else choice.text
        if choice.reasoning:
            message["reasoning_content"] = choice.reasoning
        if choice.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in choice.tool_calls
            ]
        logprobs = (
            {"content": [chat_logprob(lp) for lp in choice.logprobs], "refusal": None}
            if self.logprobs
            else None
        )
        return {
            "index": choice.index,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": FINISH_REASONS.get(choice.finish_reason, "stop"),
        }

    def _completion_choice(self, choice: pb.GeneratedChoice) -> dict[str, Any]:
        logprobs = completion_logprobs(choice.logprobs, 0)[0] if self.logprobs else None
        return {
            "index": choice.index,
            "text": choice.text,
            "logprobs": logprobs,
            "finish_reason": FINISH_REASONS.get(choice.finish_reason, "stop"),
        }
