"""What goes over the wire: OpenAI request bodies, and reading the answers (JSON or SSE).

Pure functions, so that the load generator's accounting can be tested without a server.
A stream's tokens are its usage's `completion_tokens` (every streamed request asks for the
usage chunk): chunks are not tokens, since Switchyard joins the tokens that arrived together
into one chunk (so does vLLM when its consumer falls behind); a stream without a usage chunk
counts its text chunks. An embeddings answer's tokens are its input tokens
(`usage.prompt_tokens`): it generates none.
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Api = Literal["chat", "completions", "embeddings"]
EncodingFormat = Literal["float", "base64"]
PROMPT = "Write a short story about a switchyard at night."
#: Texts to embed: distinct sentences of a retrieval corpus's length (a request of N inputs
#: takes the first N, cycling).
PASSAGES = tuple(
    f"Passage {i}: the {what} at track {i % 7 + 1} waits for the night shift's {when} departure."
    for i, (what, when) in enumerate(
        itertools.product(
            ("freight train", "shunting engine", "signal box", "tank wagon", "night mail",
             "ballast car", "switch lever", "crane"),
            ("first", "second", "third", "last"),
        )
    )
)  # fmt: skip
#: Makes every `distinct` request unique in this process (no warm-up shares one either).
_SEQUENCE = itertools.count()


@dataclass(frozen=True, slots=True)
class Workload:
    """One kind of request."""

    api: Api = "chat"
    stream: bool = False
    max_tokens: int = 16
    #: Chat with one function tool that must be called (`tool_choice: required`).
    tools: bool = False
    #: Sent when set; 0 makes the answer deterministic, so cacheable.
    temperature: float | None = None
    #: Every request its own prompt (a cache then never has its answer).
    distinct: bool = False
    #: Embeddings: the texts per request, and the vectors' encoding (the `openai` SDK asks
    #: for base64 unless told otherwise).
    inputs: int = 1
    encoding_format: EncodingFormat = "base64"

    @property
    def path(self) -> str:
        return {
            "chat": "/v1/chat/completions",
            "completions": "/v1/completions",
            "embeddings": "/v1/embeddings",
        }[self.api]


#: The tools scenario's function: what an agent's first turn typically offers.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
TOOLS_PROMPT = "What is the weather in Paris?"


def request_body(workload: Workload, model: str) -> bytes:
    """The body: `ignore_eos`, so that every plain answer has exactly `max_tokens` tokens (a
    tool call ends when its arguments do). A `distinct` workload's prompt (or first input)
    is new at every call."""
    suffix = f" (request {next(_SEQUENCE)})" if workload.distinct else ""
    if workload.api == "embeddings":
        texts = [PASSAGES[i % len(PASSAGES)] for i in range(workload.inputs)]
        texts[0] += suffix
        embed: dict[str, Any] = {"model": model, "encoding_format": workload.encoding_format}
        embed["input"] = texts[0] if workload.inputs == 1 else texts
        return orjson.dumps(embed)
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": workload.max_tokens,
        "stream": workload.stream,
    }
    if workload.stream:
        body["stream_options"] = {"include_usage": True}  # the tokens, not the chunks
    if workload.temperature is not None:
        body["temperature"] = workload.temperature
    if workload.tools:
        body["messages"] = [{"role": "user", "content": TOOLS_PROMPT + suffix}]
        body["tools"] = [WEATHER_TOOL]
        body["tool_choice"] = "required"
    elif workload.api == "chat":
        body["ignore_eos"] = True
        body["messages"] = [{"role": "user", "content": PROMPT + suffix}]
    else:
        body["ignore_eos"] = True
        body["prompt"] = PROMPT + suffix
    return orjson.dumps(body)


def completion_tokens(body: bytes, tool_call: bool = False) -> int:
    """A whole answer's completion tokens (its usage). Raises ValueError if it has none, or
    when `tool_call` and its first choice called no tool."""
    try:
        data = orjson.loads(body)
        tokens = data["usage"]["completion_tokens"]
        calls = data["choices"][0]["message"].get("tool_calls") if tool_call else True
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"not a completion: {body[:200]!r}") from exc
    if not isinstance(tokens, int):
        raise ValueError(f"not a completion: {body[:200]!r}")
    if not calls:
        raise ValueError(f"no tool call: {body[:200]!r}")
    return tokens


def embedding_tokens(body: bytes, inputs: int) -> int:
    """An embeddings answer's input tokens (its usage). Raises ValueError unless it holds
    `inputs` vectors of one length, each a list of floats or base64 of float32s."""
    try:
        data = orjson.loads(body)
        tokens = data["usage"]["prompt_tokens"]
        lengths = {_vector_length(item["embedding"]) for item in data["data"]}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not embeddings: {body[:200]!r}") from exc
    if not isinstance(tokens, int) or len(data["data"]) != inputs or len(lengths) != 1:
        raise ValueError(f"not {inputs} embeddings: {body[:200]!r}")
    if 0 in lengths:
        raise ValueError(f"empty embeddings: {body[:200]!r}")
    return tokens


def _vector_length(embedding: object) -> int:
    if isinstance(embedding, list):
        return len(embedding)
    if isinstance(embedding, str):
        size = len(base64.b64decode(embedding, validate=True))
        if size % 4 == 0:
            return size // 4
    raise ValueError("neither floats nor base64 float32s")


@dataclass(slots=True)
class StreamReader:
    """Reads an SSE stream as it arrives: counts text chunks, notes the first, the usage,
    `[DONE]` and an error event. Feed it bytes as they come (`feed` returns the text chunks
    in them)."""

    chunks: int = 0
    #: The usage chunk's completion tokens, once it arrived.
    usage_tokens: int | None = None
    done: bool = False
    error: str | None = None
    _buffer: bytes = b""

    def feed(self, data: bytes) -> int:
        buffer = self._buffer + data
        texts = 0
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            texts += self._event(buffer[start:end])
            start = end + 2
        self._buffer = buffer[start:]
        self.chunks += texts
        return texts

    @property
    def tokens(self) -> int:
        """The stream's tokens: its usage's, else its text chunks."""
        return self.usage_tokens if self.usage_tokens is not None else self.chunks

    def _event(self, event: bytes) -> int:
        texts = 0
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue  # comments (keep-alives), event names, ids
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            texts += self._data(payload)
        return texts

    def _data(self, payload: bytes) -> int:
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.error = f"bad event: {payload[:200]!r}"
            return 0
        if not isinstance(data, dict):
            self.error = f"bad event: {payload[:200]!r}"
            return 0
        if "error" in data:
            self.error = f"error event: {payload[:300].decode(errors='replace')}"
            return 0
        usage = data.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.usage_tokens = usage["completion_tokens"]
        for choice in data.get("choices") or ():
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if text:
                return 1
        return 0
