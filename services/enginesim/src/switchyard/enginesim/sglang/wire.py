"""SGLang 0.5.23's wire: what its routes read and what they write.

- `/generate` bodies pass SGLang's JSON contract first (`sglang.api.v1`, shared with its
  Rust server): a violation is HTTP 400 `{"error": "<serde-style text>"}`. Unknown
  top-level keys are ignored, unknown `sampling_params` keys refused, null is the default.
  A list in `text` (or of token-id lists in `input_ids`) is a batch (`normalize`).
- The OpenAI routes' bodies (`entrypoints/openai/protocol.py`) are pydantic models of the
  fields a simulated text model uses; unknown fields are ignored, as SGLang's are.
- Every output carries SGLang's `meta_info`, with the logprob lists a request asked for
  (`[logprob, token id, text or null]` triples); OpenAI chunks are written with orjson,
  one small dict per event.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from switchyard.enginesim.serde import unexpected
from switchyard.enginesim.serving import sse_event
from switchyard.enginesim.sglang.engine import PLAIN, LogprobEntry, LogprobRequest, Turn

if TYPE_CHECKING:
    from switchyard.enginesim.logprobs import Alternative
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
    """One sample of a request (a `/generate` batch, or `n`, has several): its rid, its
    prompt's text or token ids, its sampling_params, its place among its prompt's `n`, and
    what else the model is asked for."""

    rid: str
    text: str | None
    input_ids: Sequence[int] | None
    sampling_params: Mapping[str, Any]
    index: int = 0
    turn: Turn = PLAIN
    logprobs: LogprobRequest | None = None
    #: Tokens the prompt's images count for (the chat route reads the images).
    image_tokens: int = 0


def normalize(body: Mapping[str, Any]) -> tuple[list[Item], bool]:
    """`GenerateReqInput.normalize_batch_and_arguments`: the samples, each with its rid,
    sampling_params and logprob request, and whether the body is a batch (ValueError with
    SGLang's message). `n` > 1 makes even one prompt a batch of `n` samples per prompt, in
    prompt order, each with a fresh rid (`regenerate_rid`: the caller's rid names none)."""
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
    n = _parallel_sample_num(params)
    if not batch and n <= 1:
        # SGLang keeps a list here and fails on it later (a 500), as does this.
        if isinstance(rid, list) or isinstance(params, list):
            raise TypeError("a single prompt takes one rid and one sampling_params object")
        item = Item(rid or uuid.uuid4().hex, texts[0], ids[0], params or {})
        return [replace(item, logprobs=_logprob_requests(body, 1, 1)[0])], False
    size = len(texts)
    if n <= 1:
        rids = _batch_rids(rid, size)
    else:
        if isinstance(rid, list) and len(rid) != size:
            raise ValueError(
                "The specified rids length mismatch with the batch_size for batch processing."
            )
        rids = [uuid.uuid4().hex for _ in range(size * n)]
    per_prompt = params if isinstance(params, list) else [params or {}] * size
    requests = _logprob_requests(body, size, n)
    # A shorter sampling_params list fails with an IndexError in SGLang too (a 500).
    samples = max(n, 1)
    items = [
        Item(rids[i * samples + j], texts[i], ids[i], per_prompt[i], j, PLAIN, requests[i])
        for i in range(size)
        for j in range(samples)
    ]
    return items, True


def _parallel_sample_num(params: Any) -> int:
    """`_handle_parallel_sampling`: the `n` of the sampling params (one for all prompts)."""
    if isinstance(params, dict):
        return int(params.get("n") or 1)
    if isinstance(params, list) and params:
        n = int(params[0].get("n") or 1)
        if any(int(p.get("n") or 1) != n for p in params):
            raise ValueError(
                "The parallel_sample_num should be the same for all samples in sample params."
            )
        return n
    return 1


def _logprob_requests(body: Mapping[str, Any], size: int, n: int) -> list[LogprobRequest | None]:
    """Each prompt's `return_logprob`, `top_logprobs_num` and `logprob_start_len` (a value
    for all prompts, or a list with one per prompt, not with n > 1)."""

    def each(name: str, default: Any) -> list[Any]:
        value = body.get(name)
        if value is None:
            return [default] * size
        if not isinstance(value, list):
            return [value] * size
        if n > 1:
            raise ValueError(f"Cannot use list {name} with parallel_sample_num > 1")
        return value

    wanted, tops = each("return_logprob", False), each("top_logprobs_num", 0)
    starts, text = each("logprob_start_len", -1), bool(body.get("return_text_in_logprobs"))
    return [
        LogprobRequest(max(tops[i], 0), starts[i], text) if wanted[i] else None for i in range(size)
    ]


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


class ImageURL(BaseModel):
    url: str
    detail: Literal["auto", "low", "high"] | None = "auto"


class ContentPart(BaseModel):
    """A content part: text, an image, or another kind SGLang knows (video, audio, ...)."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    image_url: ImageURL | None = None

    @model_validator(mode="after")
    def _complete(self) -> ContentPart:
        # SGLang's part models require their payload (a union of one model per type).
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs its 'text'")
        if self.type == "image_url" and self.image_url is None:
            raise ValueError("an image_url part needs its 'image_url'")
        return self


class Function(BaseModel):
    """A function tool's definition (SGLang's `Function`)."""

    description: str | None = None
    name: str
    parameters: object | None = None
    strict: bool | None = None


class Tool(BaseModel):
    type: str = "function"
    function: Function


class ToolChoiceFunction(BaseModel):
    name: str | None = None


class ToolChoice(BaseModel):
    """`tool_choice` naming a function."""

    function: ToolChoiceFunction
    type: Literal["function"] = "function"


class FunctionCall(BaseModel):
    name: str | None = None
    arguments: str | dict[str, Any] | None = None


class ToolCall(BaseModel):
    """A tool call in an assistant message of the history."""

    id: str | None = None
    index: int | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None

    def text(self) -> str:
        """The message's text: its string, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content or () if p.type == "text")

    def parts(self) -> list[ContentPart]:
        return self.content if isinstance(self.content, list) else []


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
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | Literal["auto", "required", "none"] = "auto"
    parallel_tool_calls: bool = True
    stream_reasoning: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_effort: str | float | None = None
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
    def _tool_choice_default(cls, values: object) -> object:
        """`set_tool_choice_default`: no tool_choice means "none" without tools, else
        "auto"; `reasoning_effort` "none" turns thinking off (`normalize_reasoning_inputs`)."""
        if not isinstance(values, dict):
            return values
        if values.get("tool_choice") is None:
            values = {**values, "tool_choice": "none" if values.get("tools") is None else "auto"}
        effort = values.get("reasoning_effort")
        if effort is not None and not isinstance(effort, bool):
            kwargs = values.get("chat_template_kwargs")
            kwargs = dict(kwargs) if isinstance(kwargs, dict) else {}
            kwargs.setdefault("enable_thinking", effort != "none")
            values = {**values, "chat_template_kwargs": kwargs}
        return values

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
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | Literal["auto", "required", "none"] | None = None
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    add_special_tokens: bool = True

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("Exactly one of 'prompt' or 'messages' must be provided.")
        return self

    def chat_request(self) -> ChatCompletionRequest:
        """`to_chat_completion_request`: the chat route's request of these messages, tools
        and tool choice (ValueError, a pydantic error included, when it refuses them)."""
        data = self.model_dump(exclude={"prompt", "add_special_tokens"}, exclude_none=True)
        return ChatCompletionRequest.model_validate(data)


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
            "num_retractions": 0, "reasoning_tokens": step.reasoning_tokens,
            "completion_tokens": step.completion_tokens, "cached_tokens": step.cached_tokens,
        }  # fmt: skip
        if job.image_tokens:  # only for a prompt that had images
            meta["image_tokens"] = job.image_tokens
        if step.finish_reason is not None:
            meta["e2e_latency"] = step.e2e_latency
    else:  # ended before reaching the scheduler's output path (queue, abort)
        meta |= {"weight_version": "default", "e2e_latency": step.e2e_latency}
        meta["completion_tokens"] = step.completion_tokens
    if step.first:
        meta["response_sent_to_client_ts"] = time.time()
    return meta


def logprob_entry(value: Alternative, text: bool) -> LogprobEntry:
    """SGLang's (logprob, token id, text or None) of an output token."""
    return (value.logprob, value.token_id, value.token if text else None)


class Logprobs:
    """A request's logprob lists in `meta_info`, as the tokenizer manager keeps them: the
    prompt's (from `logprob_start_len`) in every output, the output's so far (with
    `incremental`, only the new ones; `output_token_logprobs_length` counts them all)."""

    __slots__ = ("_job", "_output", "_request", "_top")

    def __init__(self, job: Job, request: LogprobRequest) -> None:
        self._job, self._request = job, request
        self._output: list[LogprobEntry] = []
        self._top: list[list[LogprobEntry]] = []

    def add(self, step: Step, incremental: bool, meta: dict[str, Any]) -> None:
        text = self._request.text
        new = [logprob_entry(v, text) for v in step.logprobs]
        tops = [[logprob_entry(a, text) for a in v.top] for v in step.logprobs]
        self._output.extend(new)
        self._top.extend(tops)
        meta["input_token_logprobs"] = [entry for entry, _ in self._job.input_logprobs]
        meta["output_token_logprobs"] = new if incremental else list(self._output)
        meta["output_token_logprobs_length"] = len(self._output)
        if self._request.top > 0:
            meta["input_top_logprobs"] = [top for _, top in self._job.input_logprobs]
            meta["output_top_logprobs"] = tops if incremental else list(self._top)


class Output:
    """One sub-request's `/generate` outputs: the whole output so far, or with
    --incremental-streaming-output only what is new."""

    __slots__ = ("_ids", "_incremental", "_job", "_logprobs", "_text")

    def __init__(self, job: Job, incremental: bool = True) -> None:
        self._job, self._incremental = job, incremental
        self._text = ""
        self._ids: list[int] = []
        self._logprobs = Logprobs(job, job.logprobs) if job.logprobs is not None else None

    def __call__(self, step: Step) -> dict[str, Any]:
        if self._incremental:
            text, ids = step.text, step.ids
        else:
            self._text += step.text
            self._ids.extend(step.ids)
            text, ids = self._text, self._ids
        meta = meta_info(self._job, step)
        if self._logprobs is not None:
            self._logprobs.add(step, self._incremental, meta)
        return {"text": text, "output_ids": ids, "meta_info": meta}


def usage_info(
    prompt: int, completion: int, *, reasoning: int = 0, image_tokens: int = 0,
    cache_report: bool = False, cached: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """SGLang's UsageInfo (`UsageProcessor.calculate_token_usage`); `cached`: prompt tokens
    from the radix cache, reported only with `--enable-cache-report`."""
    details: dict[str, Any] | None = {"cached_tokens": cached} if cache_report else None
    if image_tokens:
        details = {"cached_tokens": 0, **(details or {}), "image_tokens": image_tokens}
    return {
        "prompt_tokens": prompt, "total_tokens": prompt + completion,
        "completion_tokens": completion, "prompt_tokens_details": details,
        "reasoning_tokens": reasoning,
        "completion_tokens_details": {"reasoning_tokens": reasoning} if reasoning else None,
    }  # fmt: skip


class Tally:
    """A response's token counts per choice, for its usage: the prompt once per prompt
    (the first of its `n` samples), completion and reasoning tokens summed over choices."""

    def __init__(self, n: int, cache_report: bool) -> None:
        self._n, self._cache_report = max(n, 1), cache_report
        self._prompt: dict[int, int] = {}
        self._completion: dict[int, int] = {}
        self._reasoning: dict[int, int] = {}
        self._images: dict[int, int] = {}
        self._cached: dict[int, int] = {}

    def add(self, index: int, job: Job, step: Step) -> None:
        """Count `step`, the latest output of choice `index` (meta_info's counts are
        cumulative; one never scheduled has no prompt tokens)."""
        self._prompt[index] = job.prompt.tokens if step.scheduled else 0
        self._completion[index] = step.completion_tokens
        self._reasoning[index] = step.reasoning_tokens if step.scheduled else 0
        self._images[index] = job.image_tokens if step.scheduled else 0
        self._cached[index] = step.cached_tokens if step.scheduled else 0

    def current(self, index: int) -> dict[str, Any]:
        """One choice's usage so far (`continuous_usage_stats`: no image count)."""
        return usage_info(
            self._prompt.get(index, 0), self._completion.get(index, 0),
            reasoning=self._reasoning.get(index, 0), cache_report=self._cache_report,
            cached=self._cached.get(index, 0),
        )  # fmt: skip

    def total(self) -> dict[str, Any]:
        first = [i for i in self._prompt if i % self._n == 0]
        return usage_info(
            sum(self._prompt[i] for i in first), sum(self._completion.values()),
            reasoning=sum(self._reasoning.values()),
            image_tokens=sum(self._images[i] for i in first), cache_report=self._cache_report,
            cached=sum(self._cached[i] for i in first),
        )  # fmt: skip


def head(rid: str, created: int, model: str, kind: str) -> dict[str, Any]:
    """The fields every OpenAI body starts with (SGLang's id is the sample's rid)."""
    return {"id": rid, "object": kind, "created": created, "model": model}


def matched_stop(finish: FinishReason | None) -> Any:
    return finish.get("matched") if finish is not None else None


class CompletionWriter:
    """The `text_completion` bodies of one `/v1/completions` request: chunks carry `usage`
    (null unless continuous) and the finish on their last; the usage chunk drops nulls.
    Logprobs are the legacy shape, `text_offset` -1 (SGLang does not compute offsets), the
    prompt's first (with `echo`) then the output's."""

    def __init__(self, jobs: Sequence[Job], model: str, echo: str, cache_report: bool) -> None:
        self._jobs, self._model, self._echo = jobs, model, echo
        self._created = int(time.time())
        self.tally = Tally(len(jobs), cache_report)

    def logprobs(self, job: Job, step: Step, *, first: bool) -> dict[str, Any] | None:
        request = job.logprobs
        if request is None:
            return None
        # The prompt's (asked for by `echo` with `logprobs` > 0) come first, then the output's.
        inputs = job.input_logprobs if first else ()
        tokens = [e for e, _ in inputs] + [logprob_entry(v, True) for v in step.logprobs]
        tops: list[Any] = []
        if request.top > 0:
            tops = [None if top is None else {t: lp for lp, _, t in top} for _, top in inputs]
            tops += [{a.token: a.logprob for a in v.top} for v in step.logprobs]
        return {
            "text_offset": [-1] * len(tokens), "token_logprobs": [lp for lp, _, _ in tokens],
            "tokens": [t for _, _, t in tokens], "top_logprobs": tops,
        }  # fmt: skip

    def _choice(self, index: int, step: Step, text: str, logprobs: Any) -> dict[str, Any]:
        finish = step.finish_reason
        return {
            "index": index, "text": text, "logprobs": logprobs,
            "finish_reason": str(finish["type"]) if finish is not None else None,
            "matched_stop": matched_stop(finish),
        }  # fmt: skip

    def response(self, steps: Sequence[Step]) -> dict[str, Any]:
        choices = []
        for index, (job, step) in enumerate(zip(self._jobs, steps, strict=True)):
            self.tally.add(index, job, step)
            logprobs = self.logprobs(job, step, first=True)
            choices.append(self._choice(index, step, self._echo + step.text, logprobs))
        return {
            **head(self._jobs[0].rid, self._created, self._model, "text_completion"),
            "choices": choices, "usage": self.tally.total(),
            "metadata": {"weight_version": "default"},
        }  # fmt: skip

    def chunk(self, index: int, step: Step, usage: dict[str, Any] | None) -> bytes:
        job = self._jobs[index]
        self.tally.add(index, job, step)
        text = self._echo + step.text if step.first else step.text
        fresh = step.logprobs or (step.first and job.input_logprobs)
        logprobs = self.logprobs(job, step, first=step.first) if fresh else None
        body = {
            **head(job.rid, self._created, self._model, "text_completion"),
            "choices": [self._choice(index, step, text, logprobs)], "usage": usage,
        }  # fmt: skip
        return sse_event(orjson.dumps(body))

    def usage_chunk(self, rid: str) -> bytes:
        usage = {k: v for k, v in self.tally.total().items() if v is not None}
        body = {**head(rid, self._created, self._model, "text_completion"), "choices": []}
        return sse_event(orjson.dumps({**body, "usage": usage}))
