"""Responses and streams in OpenAI's format (`chat.completion`, `chat.completion.chunk`,
`text_completion`), as vLLM and SGLang send them: read here once; each engine's finish
reasons, error events and reasoning field name stay in its translation.

Token counts come from the cumulative `usage` such engines put in every chunk when asked
(`stream_options: {include_usage, continuous_usage_stats}`), so a chunk of several tokens
counts them all. Both engines count that usage per choice (the chunk's choice's tokens so
far) and the usage-only last chunk over all choices, so the parser keeps one count per
choice. An engine that sends no usage is counted one token per chunk with output (or one
per logprob), and the usage-only last chunk settles the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson

from switchyard.adapter.translation import (
    Choice,
    Completion,
    Delta,
    FinishReason,
    StreamParser,
    ToolCall,
    stop_string,
)
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb

#: Where engines put a chat choice's reasoning: vLLM 0.33 `reasoning` (it renamed
#: `reasoning_content`), SGLang 0.5.23 `reasoning_content`.
REASONING_KEYS: Final = ("reasoning", "reasoning_content")


def _tokens(usage: dict[str, Any] | None, key: str) -> int | None:
    value = usage.get(key) if usage is not None else None
    return value if isinstance(value, int) and value >= 0 else None


def _arguments(raw: Any) -> str:
    """A call's arguments as JSON text (SGLang may send them as an object)."""
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    return orjson.dumps(raw).decode()


def tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    """A message's `tool_calls` (`[{id, type, function: {name, arguments}}]`)."""
    if not isinstance(raw, list):
        return ()
    calls = []
    for item in raw:
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict):
            raise InferenceError.engine_failed("the engine sent a tool call without a function")
        calls.append(
            ToolCall(
                id=str(item.get("id") or ""),
                name=str(function.get("name") or ""),
                arguments=_arguments(function.get("arguments")),
            )
        )
    return tuple(calls)


def tool_call_deltas(raw: Any) -> tuple[pb.ToolCallDelta, ...]:
    """A chunk's `delta.tool_calls`: a call's first fragment has its id and name."""
    if not isinstance(raw, list):
        return ()
    deltas = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict):
            continue
        function = item.get("function") or {}
        index = item.get("index")
        deltas.append(
            pb.ToolCallDelta(
                index=index if isinstance(index, int) and index >= 0 else position,
                id=item.get("id") or "",
                name=function.get("name") or "",
                arguments_delta=_arguments(function.get("arguments")),
            )
        )
    return tuple(deltas)


def _token_bytes(item: dict[str, Any], token: str) -> bytes:
    raw = item.get("bytes")
    if isinstance(raw, list):
        try:
            return bytes(raw)
        except (TypeError, ValueError):
            pass
    return token.encode()


def _logprob(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else -9999.0


def chat_logprobs(raw: Any) -> tuple[pb.TokenLogprob, ...]:
    """A chat choice's `logprobs` (`{content: [{token, logprob, bytes, top_logprobs}]}`)."""
    content = raw.get("content") if isinstance(raw, dict) else None
    if not isinstance(content, list):
        return ()
    out = []
    for item in content:
        token = str(item.get("token") or "")
        entry = pb.TokenLogprob(
            token=token, logprob=_logprob(item.get("logprob")), bytes=_token_bytes(item, token)
        )
        for top in item.get("top_logprobs") or ():
            alt = str(top.get("token") or "")
            entry.top_logprobs.add(
                token=alt, logprob=_logprob(top.get("logprob")), bytes=_token_bytes(top, alt)
            )
        out.append(entry)
    return tuple(out)


def completion_logprobs(raw: Any, top: int) -> tuple[pb.TokenLogprob, ...]:
    """A completion choice's `logprobs` in OpenAI's legacy format (`tokens`,
    `token_logprobs`, `top_logprobs: [{token: logprob}]`): the `top` most likely
    alternatives kept, most likely first (vLLM lists the chosen token besides them)."""
    if not isinstance(raw, dict):
        return ()
    tokens: Sequence[Any] = raw.get("tokens") or ()
    values: Sequence[Any] = raw.get("token_logprobs") or ()
    tops: Sequence[Any] = raw.get("top_logprobs") or ()
    out = []
    for i, token in enumerate(tokens):
        token = str(token)
        entry = pb.TokenLogprob(
            token=token,
            logprob=_logprob(values[i] if i < len(values) else None),
            bytes=token.encode(),
        )
        alternatives = tops[i] if i < len(tops) else None
        if isinstance(alternatives, dict) and top:
            ranked = sorted(alternatives.items(), key=lambda kv: -_logprob(kv[1]))[:top]
            for alt, value in ranked:
                entry.top_logprobs.add(token=alt, logprob=_logprob(value), bytes=alt.encode())
        out.append(entry)
    return tuple(out)


def _reasoning(message: dict[str, Any], keys: Sequence[str]) -> str:
    for key in keys:
        value = message.get(key)
        if value:
            return str(value)
    return ""


def _usage(body: dict[str, Any]) -> tuple[int, int]:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        raise InferenceError.engine_failed("the engine's response has no usage")
    return _tokens(usage, "prompt_tokens") or 0, _tokens(usage, "completion_tokens") or 0


def _choices(body: Any) -> list[dict[str, Any]]:
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices or not all(isinstance(c, dict) for c in choices):
        raise InferenceError.engine_failed("the engine's completion has no choice")
    return sorted(choices, key=lambda c: c.get("index") or 0)


def _stop(choice: dict[str, Any], finish: FinishReason, stop_key: str | None) -> str:
    """The stop string the choice's `stop_key` (vLLM `stop_reason`, SGLang `matched_stop`)
    names: a string is a stop string, an int a stop token id."""
    return stop_string(finish, choice.get(stop_key)) if stop_key else ""


def chat_completion(
    body: Any,
    *,
    finish_reason: Callable[[str], FinishReason],
    reasoning_keys: Sequence[str] = REASONING_KEYS,
    stop_key: str | None = None,
) -> Completion:
    """A `chat.completion` body: every choice, with its tool calls, reasoning, logprobs and
    the stop string that ended it (read from `stop_key`)."""
    choices = []
    for i, choice in enumerate(_choices(body)):
        message = choice.get("message") or {}
        finish = finish_reason(choice.get("finish_reason") or "stop")
        choices.append(
            Choice(
                text=message.get("content") or "",
                finish_reason=finish,
                index=i,
                tool_calls=tool_calls(message.get("tool_calls")),
                reasoning=_reasoning(message, reasoning_keys),
                logprobs=chat_logprobs(choice.get("logprobs")),
                stop_sequence=_stop(choice, finish, stop_key),
            )
        )
    prompt, completion = _usage(body)
    return Completion(tuple(choices), prompt, completion)


def text_completion(
    body: Any,
    *,
    finish_reason: Callable[[str], FinishReason],
    top_logprobs: int,
    stop_key: str | None = None,
) -> Completion:
    """A `text_completion` body: every choice, with its logprobs (legacy format) and the
    stop string that ended it (read from `stop_key`)."""
    choices = []
    for i, choice in enumerate(_choices(body)):
        finish = finish_reason(choice.get("finish_reason") or "stop")
        choices.append(
            Choice(
                text=choice.get("text") or "",
                finish_reason=finish,
                index=i,
                logprobs=completion_logprobs(choice.get("logprobs"), top_logprobs),
                stop_sequence=_stop(choice, finish, stop_key),
            )
        )
    prompt, completion = _usage(body)
    return Completion(tuple(choices), prompt, completion)


class OpenAIStream(StreamParser):
    """One OpenAI-format stream's chunks → deltas (one choice per chunk, as vLLM and SGLang
    send them)."""

    __slots__ = (
        "_chat",
        "_counted",
        "_error",
        "_finish_reason",
        "_reasoning_keys",
        "_stop_key",
        "_top_logprobs",
        "_total",
    )

    def __init__(
        self,
        *,
        chat: bool,
        finish_reason: Callable[[str], FinishReason],
        error: Callable[[dict[str, Any]], InferenceError],
        reasoning_keys: Sequence[str] = REASONING_KEYS,
        top_logprobs: int | None = None,
        stop_key: str | None = None,
    ) -> None:
        """`finish_reason` maps a chunk's (non-empty) reason, raising for one that is an
        error; `error` gives the error an `{"error": ...}` event stands for. `top_logprobs`:
        None when the request asked for no logprobs (they are then not read). `stop_key`:
        the finishing chunk's field naming the stop string that ended the choice."""
        self._stop_key = stop_key
        self._chat = chat
        self._finish_reason = finish_reason
        self._error = error
        self._reasoning_keys = reasoning_keys
        self._top_logprobs = top_logprobs
        #: Tokens counted per choice index, and over all choices.
        self._counted: dict[int, int] = {}
        self._total = 0

    def feed(self, event: str, data: Any) -> Delta | None:
        # Runs for every token: the helpers (`_reasoning`, `_tokens`, `_count`, `_stop`)
        # are inlined, and what a plain text chunk lacks is not looked at.
        if not isinstance(data, dict):
            raise InferenceError.engine_failed(
                "the engine sent a stream event that is not an object"
            )
        if "error" in data:
            raise self._error(data)
        usage = data.get("usage")
        completion = prompt = None
        if isinstance(usage, dict):
            completion = _tokens(usage, "completion_tokens")
            prompt = _tokens(usage, "prompt_tokens")
        else:
            usage = None
        choices = data.get("choices")
        if not choices:
            return self._usage_only(usage)
        choice = choices[0]
        index = choice.get("index") or 0
        reasoning = ""
        calls: tuple[pb.ToolCallDelta, ...] = ()
        if self._chat:
            delta = choice.get("delta") or {}
            text = delta.get("content") or ""
            for key in self._reasoning_keys:
                value = delta.get(key)
                if value:
                    reasoning = str(value)
                    break
            raw_calls = delta.get("tool_calls")
            if raw_calls:
                calls = tool_call_deltas(raw_calls)
        else:
            text = choice.get("text") or ""
        logprobs: tuple[pb.TokenLogprob, ...] = ()
        if self._top_logprobs is not None and choice.get("logprobs"):
            logprobs = (
                chat_logprobs(choice["logprobs"])
                if self._chat
                else completion_logprobs(choice["logprobs"], self._top_logprobs)
            )
        reason = choice.get("finish_reason")
        finish = self._finish_reason(reason) if reason else pb.FINISH_REASON_UNSPECIFIED
        output = bool(text or reasoning or calls)
        # The tokens this chunk adds to its choice (the usage counts that choice's so far).
        counted = self._counted.get(index, 0)
        count = (
            (len(logprobs) or int(output)) if completion is None else max(0, completion - counted)
        )
        self._counted[index] = counted + count
        self._total += count
        if not (output or logprobs or count or finish or usage is not None):
            return None
        return Delta(
            text=text,
            token_count=count,
            finish_reason=finish,
            prompt_tokens=prompt,
            completion_tokens=None if completion is None else self._total,
            index=index,
            tool_calls=calls,
            reasoning=reasoning,
            logprobs=logprobs,
            stop_sequence=_stop(choice, finish, self._stop_key) if finish else "",
        )

    def _usage_only(self, usage: dict[str, Any] | None) -> Delta | None:
        """The last chunk: usage over all choices, settling what no chunk counted."""
        if usage is None:
            return None
        completion = _tokens(usage, "completion_tokens")
        count = 0 if completion is None else max(0, completion - self._total)
        self._total += count
        return Delta(
            token_count=count,
            prompt_tokens=_tokens(usage, "prompt_tokens"),
            completion_tokens=None if completion is None else self._total,
        )
