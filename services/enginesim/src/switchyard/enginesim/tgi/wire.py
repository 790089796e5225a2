"""TGI's wire (`router/src/lib.rs`, `server.rs`, `chat.rs`): request bodies, answers, headers.

Bodies are read the way the router's axum `Json` extractor and serde read them:
rejections carry axum's statuses and plain-text messages (415 without a JSON content
type, 413 past `--payload-limit`, 400 for a body that is not JSON, 422 for JSON of the
wrong shape, with serde's message prefixed by the field path as `serde_path_to_error`
writes it). Unknown fields are ignored, as serde does by default. The value rules are the
engine's (`engine`).

The OpenAI layer's own mapping (`try_into_generate`): `temperature: 0` means greedy
(`do_sample: false`, no temperature); chat's `presence_penalty` becomes
`repetition_penalty = p + 2`, `top_logprobs` becomes `top_n_tokens`; `response_format`
is a `GrammarType` (`{type, value}`, not OpenAI's shape); `model` is a LoRA adapter id
unless it is "tgi"; `n` is read and ignored. Its answers keep TGI's quirks: `id` is "",
`system_fingerprint` is "<version>-native", every chat chunk repeats `delta.role` (a
special token such as EOS gets `content: ""`), chunks carry `usage: null` until the
usage chunk (`choices: []`), and the unary completion names EOS "stop" while its stream
keeps `eos_token`.

Answers are plain dicts serialized with orjson: the per-token path builds one small dict
per event. A finished generation's headers carry its timings and token counts,
`x-prompt-tokens` among them (the only place a unary native answer gives the prompt's
length when `details.prefill` is empty); streams carry none of the counts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson
from starlette.requests import Request

from switchyard.enginesim.serde import unexpected
from switchyard.enginesim.serving import sse_event
from switchyard.enginesim.tgi import VERSION
from switchyard.enginesim.tgi.errors import BodyRejection, data_error
from switchyard.enginesim.tgi.tools import (
    DEFAULT_TOOL_PROMPT,
    Choice,
    FunctionDef,
    ParsedCall,
    ToolDef,
    ToolDelta,
    compact,
    tool_call_json,
)
from switchyard.enginesim.tools import Named

if TYPE_CHECKING:
    from switchyard.enginesim.tgi.engine import FinishReason, Outcome, OutToken

_RANGES: Final = {
    "u32": (0, 2**32 - 1), "u64": (0, 2**64 - 1), "usize": (0, 2**64 - 1),
    "i32": (-(2**31), 2**31 - 1),
}  # fmt: skip
_F32_MAX: Final = 3.4028234663852886e38
_GRAMMAR_KINDS: Final = ("json", "json_object", "regex", "json_schema")
SYSTEM_FINGERPRINT: Final = f"{VERSION}-native"


async def read_json(request: Request, limit: int) -> Any:
    """The decoded JSON body, or BodyRejection."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (content_type == "application/json" or content_type.endswith("+json")):
        raise BodyRejection(415, "Expected request with `Content-Type: application/json`")
    too_large = BodyRejection(413, "Failed to buffer the request body: length limit exceeded")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyRejection(400, f"Failed to parse the request body as JSON: {exc}") from None


class Fields:
    """One JSON object read as serde reads a Rust struct, failing with serde's messages."""

    def __init__(self, value: object, struct: str, path: str = "") -> None:
        if not isinstance(value, Mapping):
            where = f"{path}: " if path else ""
            raise data_error(f"{where}invalid type: {unexpected(value)}, expected struct {struct}")
        self._data: Mapping[str, Any] = value
        self._path = path

    def _fail(self, name: str, value: object, expected: str, what: str = "type") -> Exception:
        where = f"{self._path}.{name}" if self._path else name
        return data_error(f"{where}: invalid {what}: {unexpected(value)}, expected {expected}")

    def present(self, name: str) -> bool:
        return name in self._data

    def raw(self, name: str) -> Any:
        return self._data.get(name)

    def required(self, name: str) -> Any:
        if name not in self._data:
            raise data_error(f"{self._path + ': ' if self._path else ''}missing field `{name}`")
        return self._data[name]

    def get(self, name: str, kind: str) -> Any:
        """The field as a `kind`: `String`, `bool` (absent: false), `f32`, `u32`, `u64`,
        `usize`, `i32`, `Vec<String>` (absent: None), or an `Option<...>` of one (absent or
        null: None)."""
        optional = kind.startswith("Option<")
        kind = kind.removeprefix("Option<").removesuffix(">") if optional else kind
        if name not in self._data and (optional or kind != "String"):
            return False if kind == "bool" and not optional else None
        value: Any = self.required(name)  # JSON: checked against `kind` below
        if value is None and optional:
            return None
        if kind == "Vec<String>":
            if not isinstance(value, list):
                raise self._fail(name, value, "a sequence")
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    raise self._fail(f"{name}[{i}]", item, "a string")
            return value
        expected = {"String": "a string", "bool": "a boolean"}.get(kind, kind)
        if not _is_json_kind(value, kind):
            raise self._fail(name, value, expected)
        lo, hi = _RANGES.get(kind, (-_F32_MAX, _F32_MAX) if kind == "f32" else (None, None))
        if lo is not None and not lo <= value <= hi:
            raise self._fail(name, value, kind, "value")
        return float(value) if kind == "f32" else value


def _is_json_kind(value: Any, kind: str) -> bool:
    """Whether a JSON value has the type of the Rust field's `kind` (a bool is no number)."""
    if isinstance(value, bool):
        return kind == "bool"
    if kind == "String":
        return isinstance(value, str)
    if kind == "f32":
        return isinstance(value, int | float)
    return kind != "bool" and isinstance(value, int)


@dataclass(frozen=True, slots=True)
class Grammar:
    """`GrammarType`: `{"type": "json"|"json_object"|"regex"|"json_schema", "value": ...}`.

    `json_object` is serde's alias of `json`; `json_schema` takes `{name?, schema}`.
    """

    kind: Literal["json", "regex", "json_schema"]
    value: Any


#: `GenerateParameters`, as serde reads it (`grammar` aside).
_PARAMETERS: Final = {
    "best_of": "Option<usize>", "temperature": "Option<f32>",
    "repetition_penalty": "Option<f32>", "frequency_penalty": "Option<f32>",
    "top_k": "Option<i32>", "top_p": "Option<f32>", "typical_p": "Option<f32>",
    "do_sample": "bool", "max_new_tokens": "Option<u32>", "return_full_text": "Option<bool>",
    "stop": "Vec<String>", "truncate": "Option<usize>", "watermark": "bool", "details": "bool",
    "decoder_input_details": "bool", "seed": "Option<u64>", "top_n_tokens": "Option<u32>",
    "adapter_id": "Option<String>",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Parameters:
    """`GenerateParameters`."""

    best_of: int | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    do_sample: bool = False
    max_new_tokens: int | None = None
    return_full_text: bool | None = None
    stop: tuple[str, ...] = ()
    truncate: int | None = None
    watermark: bool = False
    details: bool = False
    decoder_input_details: bool = False
    seed: int | None = None
    top_n_tokens: int | None = None
    grammar: Grammar | None = None
    adapter_id: str | None = None


#: What a request without any `parameters` object gets (`default_parameters()`): unlike
#: an empty object, it samples.
DEFAULT_PARAMETERS: Final = Parameters(do_sample=True)


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    inputs: str
    parameters: Parameters
    stream: bool = False  # only on the compat route `POST /`


def parse_grammar(value: object, path: str) -> Grammar | None:
    if value is None:
        return None
    f = Fields(value, "GrammarType", path)
    kind = f.required("type")
    if kind not in _GRAMMAR_KINDS:
        expected = ", ".join(f"`{k}`" for k in _GRAMMAR_KINDS)
        shown = f"`{kind}`" if isinstance(kind, str) else unexpected(kind)
        raise data_error(f"{path}: unknown variant {shown}, expected one of {expected}")
    body = f.required("value")
    if kind == "regex":
        if not isinstance(body, str):
            raise data_error(f"{path}.value: invalid type: {unexpected(body)}, expected a string")
        return Grammar("regex", body)
    if kind == "json_schema":
        config = Fields(body, "JsonSchemaConfig", f"{path}.value")
        config.get("name", "Option<String>")
        return Grammar("json_schema", config.required("schema"))
    return Grammar("json", body)


def parse_generate_request(body: object, *, compat: bool = False) -> GenerateRequest:
    """A `GenerateRequest` (`compat`: a `CompatGenerateRequest`, with `stream`)."""
    f = Fields(body, "CompatGenerateRequest" if compat else "GenerateRequest")
    inputs = f.get("inputs", "String")
    parameters = DEFAULT_PARAMETERS
    if f.present("parameters"):
        p = Fields(f.raw("parameters"), "GenerateParameters", "parameters")
        values = {name: p.get(name, kind) for name, kind in _PARAMETERS.items()}
        grammar = parse_grammar(p.raw("grammar"), "parameters.grammar")
        parameters = Parameters(
            **values | {"stop": tuple(values["stop"] or ()), "grammar": grammar}
        )
    return GenerateRequest(inputs, parameters, compat and f.get("stream", "bool"))


def _openai_parameters(f: Fields, **specific: Any) -> Parameters:
    """What chat and completions share: `temperature: 0` is greedy, the rest maps over."""
    temperature, model = f.get("temperature", "Option<f32>"), f.get("model", "Option<String>")
    greedy = temperature == 0.0
    return Parameters(
        temperature=None if greedy else temperature,
        frequency_penalty=f.get("frequency_penalty", "Option<f32>"),
        top_p=f.get("top_p", "Option<f32>"),
        do_sample=not greedy,
        stop=tuple(f.get("stop", "Option<Vec<String>>") or ()),
        details=True,
        seed=f.get("seed", "Option<u64>"),
        adapter_id=model if model is not None and model != "tgi" else None,
        **specific,
    )


@dataclass(frozen=True, slots=True)
class ChatRequest:
    #: Each message's role and the text the template reads (`TextMessage`).
    messages: list[dict[str, str]]
    parameters: Parameters
    stream: bool
    include_usage: bool
    logprobs: bool
    #: `tools` as sent (None: absent or null; an empty list is still "tools").
    tools: tuple[ToolDef, ...] | None = None
    tool_choice: Choice = "auto"
    tool_prompt: str = DEFAULT_TOOL_PROMPT
    #: The ids of the calls in the conversation's tool-call messages (for the next id).
    call_ids: tuple[str, ...] = ()
    #: Whether the last message has content (the tool prompt is appended to it), not calls.
    last_has_content: bool = True


@dataclass(frozen=True, slots=True)
class _Message:
    role: str
    content: str
    call_ids: tuple[str, ...] | None  # a `MessageBody::Tool`: its calls' ids


def _function(value: object, path: str) -> FunctionDef:
    f = Fields(value, "FunctionDefinition", path)
    description = f.get("description", "Option<String>")
    name = f.get("name", "String")
    key = "arguments" if f.present("arguments") or not f.present("parameters") else "parameters"
    return FunctionDef(name, f.required(key), description)


def _tool_calls(value: object, path: str) -> list[dict[str, Any]]:
    """`Vec<ToolCall>` as serde writes it back for the template (arguments as a string)."""
    if not isinstance(value, list):
        raise data_error(f"{path}: data did not match any variant of untagged enum MessageBody")
    calls = []
    for i, item in enumerate(value):
        c = Fields(item, "ToolCall", f"{path}[{i}]")
        call_id, kind = c.get("id", "String"), c.get("type", "String")
        function = _function(c.required("function"), f"{path}[{i}].function")
        calls.append({"id": call_id, "type": kind, "function": function.json()})
    return calls


def _message(value: object, path: str) -> _Message:
    """A `Message`: its role and its text (a string, or text and image chunks, images as
    `![](url)`; a message of tool calls alone reads as their JSON)."""
    m = Fields(value, "Message", path)
    role, content = m.get("role", "String"), m.raw("content")
    if content is None:
        if not m.present("tool_calls"):
            raise data_error(f"{path}: data did not match any variant of untagged enum MessageBody")
        calls = _tool_calls(m.raw("tool_calls"), f"{path}.tool_calls")
        return _Message(role, compact(calls), tuple(c["id"] for c in calls))
    if isinstance(content, str):
        return _Message(role, content, None)
    if not isinstance(content, list):
        raise data_error(
            f"{path}.content: data did not match any variant of untagged enum MessageContent"
        )
    parts = []
    for i, chunk in enumerate(content):
        c = Fields(chunk, "MessageChunk", f"{path}.content[{i}]")
        kind = c.get("type", "String")
        if kind == "text":
            parts.append(c.get("text", "String"))
        elif kind == "image_url":
            image = Fields(c.required("image_url"), "Url", f"{path}.content[{i}].image_url")
            parts.append(f"![]({image.get('url', 'String')})")
        else:
            raise data_error(
                f"{path}.content[{i}]: unknown variant `{kind}`, expected `text` or `image_url`"
            )
    return _Message(role, "".join(parts), None)


def _tools(value: object) -> tuple[ToolDef, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise data_error(f"tools: invalid type: {unexpected(value)}, expected a sequence")
    tools = []
    for i, item in enumerate(value):
        t = Fields(item, "Tool", f"tools[{i}]")
        kind = t.get("type", "String")
        tools.append(ToolDef(kind, _function(t.required("function"), f"tools[{i}].function")))
    return tuple(tools)


def _tool_choice(value: object) -> Choice:
    """`ToolTypeDeserializer`: null is auto; a string other than the three modes names a
    function; so does `{"type": "function", "function": {"name"}}`."""
    if value is None:
        return "auto"
    if isinstance(value, str):
        if value in ("auto", "none", "required"):
            return value  # type: ignore[return-value]
        return Named(value)
    if isinstance(value, Mapping) and value.get("type") == "function":
        function = value.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return Named(function["name"])
    raise data_error(
        "tool_choice: data did not match any variant of untagged enum ToolTypeDeserializer"
    )


def parse_chat_request(body: object) -> ChatRequest:
    f = Fields(body, "ChatRequest")
    raw = f.required("messages")
    if not isinstance(raw, list):
        raise data_error(f"messages: invalid type: {unexpected(raw)}, expected a sequence")
    messages = [_message(item, f"messages[{i}]") for i, item in enumerate(raw)]
    options = f.raw("stream_options")
    include_usage = options is not None and Fields(options, "StreamOptions", "stream_options").get(
        "include_usage", "bool"
    )
    max_tokens = f.get("max_tokens", "Option<u32>")
    if max_tokens is None:
        max_tokens = f.get("max_completion_tokens", "Option<u32>")
    presence = f.get("presence_penalty", "Option<f32>")
    f.get("n", "Option<u32>")
    parameters = _openai_parameters(
        f,
        repetition_penalty=None if presence is None else presence + 2.0,
        max_new_tokens=max_tokens,
        decoder_input_details=False,  # unlike `/v1/completions`
        top_n_tokens=f.get("top_logprobs", "Option<u32>"),
        grammar=parse_grammar(f.raw("response_format"), "response_format"),
    )
    call_ids = tuple(i for m in messages if m.call_ids is not None for i in m.call_ids)
    return ChatRequest(
        messages=[{"role": m.role, "content": m.content} for m in messages],
        parameters=parameters,
        stream=f.get("stream", "bool"),
        include_usage=include_usage,
        logprobs=bool(f.get("logprobs", "Option<bool>")),
        tools=_tools(f.raw("tools")),
        tool_choice=_tool_choice(f.raw("tool_choice")),
        tool_prompt=f.get("tool_prompt", "Option<String>") or DEFAULT_TOOL_PROMPT,
        call_ids=call_ids,
        last_has_content=bool(messages) and messages[-1].call_ids is None,
    )


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    prompts: list[str]
    parameters: Parameters
    stream: bool
    has_suffix: bool


def parse_completion_request(body: object) -> CompletionRequest:
    f = Fields(body, "CompletionRequest")
    prompt = f.required("prompt")
    if isinstance(prompt, str):
        prompt = [prompt]
    elif not isinstance(prompt, list) or not all(isinstance(p, str) for p in prompt):
        raise data_error(
            f"prompt: invalid type: {unexpected(prompt)}, expected a string or a sequence"
        )
    elif not prompt:
        raise data_error("prompt: Empty array detected. Do not use an empty array for the prompt.")
    stream = f.get("stream", "bool")
    parameters = _openai_parameters(
        f,
        repetition_penalty=f.get("repetition_penalty", "Option<f32>"),
        max_new_tokens=f.get("max_tokens", "Option<u32>"),
        decoder_input_details=not stream,
    )
    return CompletionRequest(
        prompt, parameters, stream, f.get("suffix", "Option<String>") is not None
    )


# --- native answers ---------------------------------------------------------------------


def details(outcome: Outcome, best_of: Sequence[Outcome] = ()) -> dict[str, Any]:
    """`Details` of a `/generate` response (`top_tokens`, `best_of_sequences` only when set)."""
    body: dict[str, Any] = {
        "finish_reason": outcome.decoded.finish_reason,
        "generated_tokens": outcome.decoded.generated_tokens,
        "seed": outcome.seed,
        "prefill": outcome.prefill() if outcome.job.prefill_logprobs else [],
        "tokens": [t.json() for t in outcome.decoded.tokens],
    }
    if best_of:
        body["best_of_sequences"] = [
            {**details(o), "generated_text": o.decoded.text} for o in best_of
        ]
    if outcome.top_tokens:
        body["top_tokens"] = [[t.json() for t in top] for top in outcome.top_tokens]
    return body


def stream_event(
    index: int, token: OutToken, top_tokens: Sequence[OutToken] = (), *,
    generated_text: str | None = None, details: dict[str, Any] | None = None,
) -> bytes:  # fmt: skip
    """One `StreamResponse` event, framed as TGI frames it (`data:` without a space)."""
    body: dict[str, Any] = {"index": index, "token": token.json()}
    if top_tokens:
        body["top_tokens"] = [t.json() for t in top_tokens]
    body["generated_text"] = generated_text
    body["details"] = details
    return sse_event(orjson.dumps(body), space=False)


def stream_details(outcome: Outcome) -> dict[str, Any]:
    """`StreamDetails` of the last stream event."""
    return {
        "finish_reason": outcome.decoded.finish_reason,
        "generated_tokens": outcome.decoded.generated_tokens,
        "seed": outcome.seed,
        "input_length": outcome.job.input_length,
    }


# --- OpenAI answers ---------------------------------------------------------------------


def openai_finish(reason: FinishReason) -> str:
    """`FinishReason::format(true)`: only EOS is renamed, to "stop"."""
    return "stop" if reason == "eos_token" else reason


def _usage(outcomes: Sequence[Outcome]) -> dict[str, int]:
    # TGI counts the prompt as its prefill tokens.
    prompt = sum(o.job.input_length for o in outcomes)
    completion = sum(o.decoded.generated_tokens for o in outcomes)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _openai(kind: str, model: str, choices: list[dict[str, Any]], **rest: Any) -> dict[str, Any]:
    return {
        "object": kind, "id": "", "created": int(time.time()), "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices, **rest,
    }  # fmt: skip


def _logprob(token: OutToken, top: Sequence[OutToken]) -> dict[str, Any]:
    top_logprobs = [{"token": t.text, "logprob": t.logprob} for t in top]
    return {"token": token.text, "logprob": token.logprob, "top_logprobs": top_logprobs}


def chat_completion(
    model: str, outcome: Outcome, logprobs: bool, call: ParsedCall | None = None
) -> dict[str, Any]:
    """The unary `ChatCompletion`: the text, or the call the output made (`ToolCallMessage`,
    without `content`)."""
    decoded = outcome.decoded
    content = None
    if logprobs:
        tops = outcome.top_tokens or tuple(() for _ in decoded.tokens)
        content = {
            "content": [_logprob(t, top) for t, top in zip(decoded.tokens, tops, strict=True)]
        }
    message: dict[str, Any] = {"role": "assistant", "content": decoded.text}
    if call is not None:
        message = {"role": "assistant", "tool_calls": [tool_call_json(call)]}
    finish = openai_finish(decoded.finish_reason)
    choice = {"index": 0, "message": message, "logprobs": content, "finish_reason": finish}
    return _openai("chat.completion", model, [choice], usage=_usage([outcome]))


def chat_chunk(
    model: str, token: OutToken, top: Sequence[OutToken], *, logprobs: bool,
    finish: FinishReason | None, tool: ToolDelta | None = None, call_id: str = "",
) -> bytes:  # fmt: skip
    """One streamed token: its text as content, or (`tool`) a `tool_calls` delta whose
    arguments stand in for the token's text (in its logprobs too)."""
    delta: dict[str, Any] = {"role": "assistant", "content": "" if token.special else token.text}
    if tool is not None:
        token = replace(token, text=tool.arguments)
        function = {"name": tool.name, "arguments": tool.arguments}
        call = {"index": 0, "id": call_id, "type": "function", "function": function}
        delta = {"role": "assistant", "tool_calls": [call]}
    choice = {
        "index": 0,
        "delta": delta,
        "logprobs": {"content": [_logprob(token, top)]} if logprobs else None,
        "finish_reason": None if finish is None else openai_finish(finish),
    }
    return sse_event(
        orjson.dumps(_openai("chat.completion.chunk", model, [choice], usage=None)), space=False
    )


def chat_usage_chunk(model: str, outcome: Outcome) -> bytes:
    body = _openai("chat.completion.chunk", model, [], usage=_usage([outcome]))
    return sse_event(orjson.dumps(body), space=False)


def _choice(index: int, text: str, finish_reason: str) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def completion(model: str, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The unary `CompletionFinal`: one choice per prompt, EOS named "stop"."""
    choices = [
        _choice(i, o.decoded.text, openai_finish(o.decoded.finish_reason))
        for i, o in enumerate(outcomes)
    ]
    return _openai("text_completion", model, choices, usage=_usage(outcomes))


def completion_chunk(model: str, index: int, token: OutToken, outcome: Outcome | None) -> bytes:
    """A streamed completion token: its raw text (even EOS) and `finish_reason: ""`; the last
    one a `CompletionFinal` with TGI's native finish reason."""
    if outcome is None:
        body = {
            "object": "text_completion", "id": "", "created": int(time.time()),
            "choices": [_choice(index, token.text, "")], "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }  # fmt: skip
    else:
        choice = _choice(index, token.text, outcome.decoded.finish_reason)
        body = _openai("text_completion", model, [choice], usage=_usage([outcome]))
    return sse_event(orjson.dumps(body), space=False)


def done() -> bytes:
    return sse_event(b"[DONE]", space=False)


# --- headers ----------------------------------------------------------------------------


def _compute_type() -> str:
    return os.environ.get("COMPUTE_TYPE", "gpu+optimized")


def _counts(received_at: float, outcome: Outcome) -> dict[str, int]:
    """`generate_internal`'s timings (whole milliseconds) and token counts."""
    now = time.perf_counter()
    inference = now - outcome.started_at
    tokens = outcome.decoded.generated_tokens
    return {
        "x-total-time": int((now - received_at) * 1000),
        "x-validation-time": int(outcome.validated_s * 1000),
        "x-queue-time": int(outcome.queued_s * 1000),
        "x-inference-time": int(inference * 1000),
        "x-time-per-token": int(inference / max(tokens, 1) * 1000),
        "x-prompt-tokens": outcome.job.input_length,
        "x-generated-tokens": tokens,
    }


def generation_headers(
    received_at: float, outcomes: Sequence[Outcome], characters: int, *, completions: bool = False
) -> dict[str, str]:
    """A finished generation's headers (`characters`: the input's length). Unary
    `/v1/completions` sums every count over its prompts, and drops `x-compute-time`."""
    sums: dict[str, int] = {}
    for outcome in outcomes:
        for name, value in _counts(received_at, outcome).items():
            sums[name] = sums.get(name, 0) + value
    head = {"x-compute-type": _compute_type()}
    if not completions:
        head["x-compute-time"] = f"{time.perf_counter() - received_at}"
    head["x-compute-characters"] = str(characters)
    return {**head, **{name: str(value) for name, value in sums.items()}}


def stream_headers(characters: int) -> dict[str, str]:
    """What a stream's response carries before its first event."""
    return {
        "x-compute-type": _compute_type(),
        "x-compute-characters": str(characters),
        "x-accel-buffering": "no",
    }
