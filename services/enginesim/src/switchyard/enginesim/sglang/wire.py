"""SGLang 0.5.23's wire: what its routes read and what they write.

- `/generate` bodies pass SGLang's JSON contract first (`sglang.api.v1`, shared with its
  Rust server): a violation is HTTP 400 `{"error": "<serde-style text>"}`. Unknown
  top-level keys are ignored, unknown `sampling_params` keys refused, null is the default.
  A list in `text` (or of token-id lists in `input_ids`) is a batch (`normalize`).
- The OpenAI routes' bodies (`entrypoints/openai/protocol.py`) are pydantic models of the
  fields a simulated text model uses; unknown fields are ignored, as SGLang's are.
- Every output carries SGLang's `meta_info`; OpenAI chunks are written with orjson, one
  small dict per event.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from switchyard.enginesim.serde import unexpected
from switchyard.enginesim.serving import sse_event

if TYPE_CHECKING:
    from switchyard.enginesim.sglang.engine import FinishReason, Job, Step

DEFAULT_MODEL_NAME: Final = "default"
#: What SGLang constrains `response_format: {"type": "json_object"}` to.
JSON_OBJECT_SCHEMA: Final = '{"type": "object"}'

# --- the /generate contract ------------------------------------------------------------

Check = Callable[[Any], None]


class ContractError(ValueError):
    """The body violates the JSON contract."""


def _invalid(value: Any, expected: str) -> ContractError:
    return ContractError(f"invalid type: {unexpected(value)}, expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(ok: Callable[[Any], bool], expected: str) -> Check:
    def check(value: Any) -> None:
        if not ok(value):
            raise _invalid(value, expected)

    return check


_i64 = _kind(_is_int, "i64")
_f64 = _kind(lambda v: _is_int(v) or isinstance(v, float), "f64")
_bool = _kind(lambda v: isinstance(v, bool), "a boolean")
_str = _kind(lambda v: isinstance(v, str), "a string")


def _u64(value: Any) -> None:
    _kind(_is_int, "u64")(value)
    if value < 0:
        raise ContractError(f"invalid value: integer `{value}`, expected u64")


def _seq(item: Check) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, list):
            raise _invalid(value, "a sequence")
        for x in value:
            item(x)

    return check


def _map(item: Check) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, dict):
            raise _invalid(value, "a map")
        for x in value.values():
            item(x)

    return check


def _or_list(item: Check, name: str, ok: Callable[[Any], bool]) -> Check:
    """`<T>OrList`: one value (`ok`), or a list of them; each checked by `item`."""

    def check(value: Any) -> None:
        if isinstance(value, list):
            _seq(item)(value)
        elif not ok(value):
            raise _invalid(value, f"a value or an array of values for {name}")
        else:
            item(value)

    return check


def _token_ids(value: Any) -> None:
    if not isinstance(value, list):
        raise _invalid(value, "a value or an array of values for TokenIdsOrList")
    # [] and [number, ...] are one prompt; anything else is a batch of prompts.
    if not value or _is_int(value[0]) or isinstance(value[0], float):
        _seq(_i64)(value)
    else:
        _seq(_seq(_i64))(value)


def _struct(name: str, fields: dict[str, Check]) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, dict):
            raise _invalid(value, f"struct {name}")
        for key, item in value.items():
            if key not in fields:
                listed = ", ".join(f"`{f}`" for f in fields)
                raise ContractError(f"unknown field `{key}`, expected one of {listed}")
            if item is not None:
                fields[key](item)

    return check


_STRINGS: Final = _or_list(_str, "StringOrList", lambda v: isinstance(v, str))
SAMPLING_FIELDS: Final[dict[str, Check]] = {
    "max_new_tokens": _i64, "stop": _STRINGS, "stop_token_ids": _seq(_i64),
    "stop_regex": _STRINGS, "temperature": _f64, "top_p": _f64, "top_k": _i64, "min_p": _f64,
    "frequency_penalty": _f64, "presence_penalty": _f64, "repetition_penalty": _f64,
    "min_new_tokens": _i64, "n": _i64, "json_schema": _str, "regex": _str, "ebnf": _str,
    "structural_tag": _str, "ignore_eos": _bool, "skip_special_tokens": _bool,
    "spaces_between_special_tokens": _bool, "no_stop_trim": _bool, "stream_interval": _i64,
    "logit_bias": _map(_f64), "sampling_seed": _i64, "custom_params": lambda v: None,
    "beam_width": _i64,
    "watermark": _struct(
        "WatermarkRequestConfig", {"enabled": _bool, "key": _str, "context_window": _i64}
    ),
    "choice": _seq(_str),
}  # fmt: skip
_SAMPLING: Final = _struct("SamplingParams", SAMPLING_FIELDS)
_REQUEST_FIELDS: Final[dict[str, Check]] = {
    "rid": _STRINGS, "text": _STRINGS, "input_ids": _token_ids, "stream": _bool,
    "return_logprob": _or_list(_bool, "BoolOrList", lambda v: isinstance(v, bool)),
    "logprob_start_len": _or_list(_i64, "Int64OrList", _is_int),
    "top_logprobs_num": _or_list(_i64, "Int64OrList", _is_int),
    "return_text_in_logprobs": _bool, "priority": _i64, "max_thinking_tokens": _u64,
    "custom_labels": _map(_str),
    "sampling_params": _or_list(_SAMPLING, "SamplingParamsOrList", lambda v: isinstance(v, dict)),
}  # fmt: skip


def contract_violation(body: dict[str, Any]) -> str | None:
    """The contract violation in a parsed `/generate` body, or None."""
    try:
        for key, value in body.items():
            if value is not None and key in _REQUEST_FIELDS:
                _REQUEST_FIELDS[key](value)
    except ContractError as exc:
        return str(exc)
    return None


@dataclass(frozen=True, slots=True)
class Item:
    """One prompt of a request (a `/generate` batch has several): its rid, its text or token
    ids, its sampling_params."""

    rid: str
    text: str | None
    input_ids: Sequence[int] | None
    sampling_params: Mapping[str, Any]


def normalize(body: Mapping[str, Any]) -> tuple[list[Item], bool]:
    """`GenerateReqInput.normalize_batch_and_arguments`: the prompts, each with its rid and
    sampling_params, and whether the body is a batch (ValueError with SGLang's message)."""
    text, input_ids = body.get("text"), body.get("input_ids")
    if text is None and input_ids is None:
        raise ValueError("Either text, input_ids or input_embeds should be provided.")
    if text is not None:
        batch = not isinstance(text, str)
        texts: list[str | None] = list(text) if batch else [text]
        ids: list[Sequence[int] | None] = [None] * len(texts)
    else:
        if not input_ids:
            raise ValueError("input_ids cannot be empty.")
        batch = isinstance(input_ids[0], list)
        ids = list(input_ids) if batch else [input_ids]
        texts = [None] * len(ids)
    params, rid = body.get("sampling_params"), body.get("rid")
    if not batch:
        # SGLang keeps a list here and fails on it later (a 500), as does this.
        if isinstance(rid, list) or isinstance(params, list):
            raise TypeError("a single prompt takes one rid and one sampling_params object")
        return [Item(rid or uuid.uuid4().hex, texts[0], ids[0], params or {})], False
    rids = _batch_rids(rid, len(texts))
    per_prompt = params if isinstance(params, list) else [params or {}] * len(texts)
    # A shorter sampling_params list fails with an IndexError in SGLang too (a 500).
    return [Item(rids[i], texts[i], ids[i], per_prompt[i]) for i in range(len(texts))], True


def _batch_rids(rid: Any, size: int) -> list[str]:
    """`_normalize_rid` and `_validate_rid_uniqueness`."""
    if rid is None:
        return [uuid.uuid4().hex for _ in range(size)]
    if isinstance(rid, str):
        return [f"{rid}_{i}" for i in range(size)]
    if len(rid) != size:
        raise ValueError(
            "The specified rids length mismatch with the batch_size for batch processing."
        )
    repeated = [r for r, count in Counter(rid).items() if count > 1]
    if repeated:
        raise ValueError(f"Duplicate request IDs detected within the request: {repeated}")
    return list(rid)


# --- the OpenAI routes' bodies ----------------------------------------------------------


class StreamOptions(BaseModel):
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


class JsonSchemaResponseFormat(BaseModel):
    name: str
    description: str | None = None
    schema_: dict[str, object] | None = Field(alias="schema", default=None)
    strict: StrictBool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")  # structural_tag carries its own fields

    type: Literal["text", "json_object", "json_schema", "structural_tag"]
    json_schema: JsonSchemaResponseFormat | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text: its string, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content or () if p.type == "text")


class _SamplingFields(BaseModel):
    """Fields the chat and completion requests share."""

    model: str = DEFAULT_MODEL_NAME
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    n: int = 1
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    min_tokens: int = 0
    regex: str | None = None
    ebnf: str | None = None
    stop_token_ids: list[int] | None = None
    no_stop_trim: bool = False
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    response_format: ResponseFormat | None = None
    rid: str | list[str] | None = None
    priority: int | None = None

    def sampling_params(self, **specific: Any) -> dict[str, Any]:
        """SGLang's SamplingParams for this request: `specific` (the route's own), the
        extras both routes pass through, then the `response_format` constraint."""
        return {
            **specific,
            "min_new_tokens": self.min_tokens, "stop_token_ids": self.stop_token_ids,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty, "regex": self.regex,
            "ebnf": self.ebnf, "n": self.n, "no_stop_trim": self.no_stop_trim,
            "ignore_eos": self.ignore_eos, "skip_special_tokens": self.skip_special_tokens,
            "logit_bias": self.logit_bias, "sampling_seed": self.seed,
            **_format_params(self.response_format),
        }  # fmt: skip


def _format_params(fmt: ResponseFormat | None) -> dict[str, Any]:
    """The SamplingParams constraint of an OpenAI `response_format` (schemas as JSON text,
    as SGLang's `convert_json_schema_to_str` writes them)."""
    if fmt is None or fmt.type == "text":
        return {}
    if fmt.type == "json_schema":
        if fmt.json_schema is None or fmt.json_schema.schema_ is None:
            raise ValueError("schema_ is required for json_schema response format request.")
        return {"json_schema": json.dumps(fmt.json_schema.schema_)}
    if fmt.type == "json_object":
        return {"json_schema": JSON_OBJECT_SCHEMA}
    return {"structural_tag": json.dumps(fmt.model_dump(by_alias=True))}


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage]
    logprobs: bool = False
    top_logprobs: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    continue_final_message: bool = False
    separate_reasoning: bool = True

    @model_validator(mode="before")
    @classmethod
    def _schema_at_top(cls, values: object) -> object:
        """SGLang accepts `response_format: {type: json_schema, schema: {...}}` too."""
        if not isinstance(values, dict):
            return values
        fmt = values.get("response_format")
        if (
            isinstance(fmt, dict)
            and fmt.get("type") == "json_schema"
            and not fmt.get("json_schema")
        ):
            schema = fmt.get("schema")
            if isinstance(schema, dict):
                rest = {k: v for k, v in fmt.items() if k != "schema"}
                named = {"name": schema.get("title", "Schema"), "schema": schema}
                values = {**values, "response_format": {**rest, "json_schema": named}}
        return values

    @property
    def max_output(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_SamplingFields):
    prompt: list[int] | list[list[int]] | str | list[str]
    echo: bool = False
    logprobs: int | None = None
    max_tokens: int = 16
    suffix: str | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    json_schema: str | None = None

    @field_validator("max_tokens")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value is not None and value <= 0:
            raise ValueError("max_tokens must be positive")
        return value


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = DEFAULT_MODEL_NAME
    prompt: str | list[str] | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("Exactly one of 'prompt' or 'messages' must be provided.")
        return self


class DetokenizeRequest(BaseModel):
    model: str = DEFAULT_MODEL_NAME
    tokens: list[int] | list[list[int]]
    skip_special_tokens: bool = True


# --- what SGLang writes -----------------------------------------------------------------


def abort_error(finish: FinishReason | None) -> tuple[int, str] | None:
    """(status, message) of an abort SGLang reports as an error: one with a status code of
    400 or more (a full queue, a bad grammar). A plain abort (`/abort_request`) is None: it
    ends the output normally, with finish_reason "abort"."""
    if finish is None or finish.get("type") != "abort":
        return None
    status = finish.get("status_code")
    if isinstance(status, int) and 400 <= status < 600:
        return status, str(finish.get("message", "Generation aborted."))
    return None


def meta_info(job: Job, step: Step) -> dict[str, Any]:
    """The `meta_info` SGLang attaches to every output of a request."""
    meta: dict[str, Any] = {"id": job.rid, "finish_reason": step.finish_reason}
    if step.scheduled:
        meta |= {
            "prompt_tokens": job.prompt.tokens, "weight_version": "default",
            "num_retractions": 0, "reasoning_tokens": 0,
            "completion_tokens": step.completion_tokens, "cached_tokens": 0,
        }  # fmt: skip
        if step.finish_reason is not None:
            meta["e2e_latency"] = step.e2e_latency
    else:  # ended before reaching the scheduler's output path (queue, abort)
        meta |= {"weight_version": "default", "e2e_latency": step.e2e_latency}
        meta["completion_tokens"] = step.completion_tokens
    if step.first:
        meta["response_sent_to_client_ts"] = time.time()
    return meta


class Output:
    """One sub-request's `/generate` outputs: the whole output so far, or with
    --incremental-streaming-output only what is new."""

    __slots__ = ("_ids", "_incremental", "_job", "_text")

    def __init__(self, job: Job, incremental: bool = True) -> None:
        self._job, self._incremental = job, incremental
        self._text = ""
        self._ids: list[int] = []

    def __call__(self, step: Step) -> dict[str, Any]:
        if self._incremental:
            text, ids = step.text, step.ids
        else:
            self._text += step.text
            self._ids.extend(step.ids)
            text, ids = self._text, self._ids
        return {"text": text, "output_ids": ids, "meta_info": meta_info(self._job, step)}


class OpenAIWriter:
    """The bodies of one OpenAI request: `chat.completion[.chunk]` or `text_completion`.

    Chat chunks always carry `delta.reasoning_content` (null), a first chunk with the role
    and a separate last one with the finish; completion chunks carry `usage` (null unless
    continuous) and the finish on their last; the usage chunk of completions drops nulls.
    """

    def __init__(
        self, job: Job, model: str, *, chat: bool, usage: Callable[[int, int], dict[str, Any]]
    ) -> None:
        self.chat = chat
        self._head = {"id": job.rid, "object": "", "created": int(time.time()), "model": model}
        self._job, self._usage = job, usage

    def usage(self, step: Step) -> dict[str, Any]:
        """SGLang's UsageInfo; meta_info has no prompt_tokens for an output never scheduled."""
        return self._usage(self._job.prompt.tokens if step.scheduled else 0, step.completion_tokens)

    def _choice(self, finish: FinishReason | None, **fields: Any) -> dict[str, Any]:
        matched = finish.get("matched") if finish is not None else None
        finish_type = str(finish["type"]) if finish is not None else None
        return {
            "index": 0,
            **fields,
            "logprobs": None,
            "finish_reason": finish_type,
            "matched_stop": matched,
        }

    def response(self, step: Step, echo: str = "") -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": step.text, "reasoning_content": None}
            choice = self._choice(step.finish_reason, message=message)
        else:
            choice = self._choice(step.finish_reason, text=echo + step.text)
        kind = "chat.completion" if self.chat else "text_completion"
        return {
            **self._head, "object": kind, "choices": [choice], "usage": self.usage(step),
            "metadata": {"weight_version": "default"},
        }  # fmt: skip

    def chunk(
        self, finish: FinishReason | None = None, usage: dict[str, Any] | None = None,
        **delta: str,
    ) -> bytes:  # fmt: skip
        """A chat chunk (`delta`: role, content) or a completion chunk (`delta`: text)."""
        if self.chat:
            choice = self._choice(finish, delta={"reasoning_content": None, **delta})
            body = {**self._head, "object": "chat.completion.chunk", "choices": [choice]}
            if usage is not None:
                body["usage"] = usage
        else:
            choice = self._choice(finish, **delta)
            body = {**self._head, "object": "text_completion", "choices": [choice], "usage": usage}
        return sse_event(orjson.dumps(body))

    def usage_chunk(self, usage: dict[str, Any]) -> bytes:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        if not self.chat:
            usage = {k: v for k, v in usage.items() if v is not None}
        return sse_event(
            orjson.dumps({**self._head, "object": kind, "choices": [], "usage": usage})
        )
