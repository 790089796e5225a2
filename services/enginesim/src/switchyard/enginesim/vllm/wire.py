"""vLLM 0.33's wire: its OpenAI request bodies (`openai/*/protocol.py`) and what it answers.

Requests are pydantic models; unknown fields are accepted (`extra="allow"`), as vLLM does,
the removed `guided_*` fields among them, which change nothing (the route warns). The
`mode="before"` checks raise `InvalidRequest`, which pydantic lets through unwrapped, so
they answer vLLM's 400 `BadRequestError` rather than a validation error.

Whole responses are `model_dump()`s (every field, nulls included). Stream chunks are
`model_dump_json(exclude_unset=True)`: only the fields vLLM's code sets, in the models'
field order; the final usage chunk drops nulls. Chunks are plain dicts serialized with
orjson, never pydantic models: this is the hot path of every benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, TypeAlias

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from switchyard.enginesim import tokenizer
from switchyard.enginesim.logprobs import Alternative, TokenLogprob, token_logprob
from switchyard.enginesim.serving import sse_event
from switchyard.enginesim.vllm import chat
from switchyard.enginesim.vllm.errors import InvalidRequest

if TYPE_CHECKING:
    from switchyard.enginesim.vllm.engine import Outcome, Step

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
MAX_STOP_STRINGS: Final = 4  # VLLM_MAX_STOP_STRINGS
MAX_COMPLETION_PROMPTS: Final = 1024  # VLLM_MAX_COMPLETION_PROMPTS
REMOVED_GUIDED_FIELDS: Final = frozenset(
    {
        "guided_json", "guided_regex", "guided_choice", "guided_grammar",
        "guided_decoding_backend", "guided_whitespace_pattern",
    }
)  # fmt: skip

StopParam: TypeAlias = str | Annotated[list[str], Field(max_length=MAX_STOP_STRINGS)] | None
Seed: TypeAlias = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)] | None
TokenId: TypeAlias = Annotated[int, Field(ge=0)]


class OpenAIBaseModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(OpenAIBaseModel):
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


class JsonSchemaResponseFormat(OpenAIBaseModel):
    name: str
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIBaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaResponseFormat | None = None


class StructuredOutputsParams(OpenAIBaseModel):
    """`vllm.sampling_params.StructuredOutputsParams`: exactly one constraint."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    json_: str | dict[str, Any] | None = Field(default=None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputsParams:
        kinds = (self.json_, self.regex, self.choice, self.grammar, self.json_object)
        count = sum(kind is not None for kind in (*kinds, self.structural_tag))
        if count != 1:
            # vLLM shows its dataclass's __dict__, private fields included.
            shown = self.model_dump(by_alias=True, exclude=set(self.model_extra or ()))
            shown |= {"_backend": None, "_backend_was_auto": False}
            raise InvalidRequest(
                f"You can only use one kind of structured outputs constraint but multiple "
                f"are specified: {shown}"
                if count
                else f"You must use one kind of structured outputs constraint but none are "
                f"specified: {shown}"
            )
        return self


def _constraint_count(data: dict[str, Any]) -> int:
    so = data.get("structured_outputs")
    if not isinstance(so, dict):
        return 0
    return sum(so.get(k) is not None for k in ("json", "regex", "choice"))


def _check_constraints(data: dict[str, Any], parameter: str | None) -> None:
    if _constraint_count(data) > 1:
        raise InvalidRequest(
            "You can only use one kind of constraints for structured outputs "
            "('json', 'regex' or 'choice').",
            parameter=parameter,
        )


class SamplingRequest(OpenAIBaseModel):
    """The fields completions and chat share."""

    model: str | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    n: int = 1
    presence_penalty: float | None = None
    seed: Seed = None
    stop: StopParam = []
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None
    use_beam_search: bool = False
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    stop_token_ids: list[int] | None = []
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: int = 0
    skip_special_tokens: bool | None = None
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputsParams | None = None
    priority: int = Field(default=0, ge=INT64_MIN, le=INT64_MAX)
    request_id: str | None = None
    return_token_ids: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _shared_checks(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        response_format = data.get("response_format")
        if (
            isinstance(response_format, dict)
            and response_format.get("type") == "json_schema"
            and response_format.get("json_schema") is None
        ):
            raise InvalidRequest(
                "When response_format type is 'json_schema', the "
                "'json_schema' field must be provided.",
                parameter="response_format",
            )
        if data.get("stream_options") and not data.get("stream"):
            raise InvalidRequest(
                "Stream options can only be defined when `stream=True`.",
                parameter="stream_options",
            )
        return data

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CompletionRequest(SamplingRequest):
    prompt: list[TokenId] | list[list[TokenId]] | str | list[str] | None = None
    echo: bool | None = False
    logprobs: int | None = None
    max_tokens: int | None = 16
    suffix: str | None = None
    add_special_tokens: bool = True

    @model_validator(mode="before")
    @classmethod
    def _checks(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("max_tokens") is None:  # vLLM: an explicit null means the default, 16
            data = {**data, "max_tokens": 16}
        logprobs = data.get("logprobs")
        if logprobs is not None and not isinstance(logprobs, int | float):
            raise InvalidRequest(
                "`logprobs` must be an integer.", parameter="logprobs", value=logprobs
            )
        if logprobs is not None and logprobs < 0 and logprobs != -1:
            raise InvalidRequest(
                "`logprobs` must be a positive value or -1.", parameter="logprobs", value=logprobs
            )
        _check_constraints(data, "structured_outputs")
        prompt = data.get("prompt")
        if prompt is None or prompt == "":
            raise InvalidRequest(
                "Either prompt or prompt_embeds must be provided and non-empty.",
                parameter="prompt",
            )
        if (
            isinstance(prompt, list)
            and not all(isinstance(p, int) for p in prompt)
            and len(prompt) > MAX_COMPLETION_PROMPTS
        ):
            raise InvalidRequest(
                f"prompt list length {len(prompt)} exceeds the maximum allowed count of "
                f"{MAX_COMPLETION_PROMPTS}. To increase this limit, set the "
                "VLLM_MAX_COMPLETION_PROMPTS environment variable.",
                parameter="prompt",
            )
        return data

    @property
    def output_limit(self) -> tuple[int | None, str]:
        return self.max_tokens, "max_tokens"

    @property
    def num_logprobs(self) -> int | None:
        """How many alternatives per token (`SamplingParams.logprobs`); None: no logprobs."""
        return self.logprobs


class ImageURL(OpenAIBaseModel):
    url: str
    detail: str | None = None


class ContentPart(OpenAIBaseModel):
    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class FunctionCall(OpenAIBaseModel):
    name: str
    arguments: str


class ToolCall(OpenAIBaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(OpenAIBaseModel):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(OpenAIBaseModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatCompletionTool(OpenAIBaseModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(OpenAIBaseModel):
    name: str


class NamedToolChoice(OpenAIBaseModel):
    function: NamedFunction
    type: Literal["function"] = "function"


_CORRECT_USAGE: Final = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'


def _check_logprobs(data: dict[str, Any]) -> None:
    """vLLM's `check_logprobs` (chat), in its order and words."""
    top = data.get("top_logprobs")
    if top is not None and not isinstance(top, int | float):
        raise InvalidRequest(
            "`top_logprobs` must be an integer.", parameter="top_logprobs", value=top
        )
    if top is not None:
        if top < 0 and top != -1:
            raise InvalidRequest(
                "`top_logprobs` must be a positive value or -1.",
                parameter="top_logprobs",
                value=top,
            )
        if (top == -1 or top > 0) and not data.get("logprobs"):
            raise InvalidRequest(
                "when using `top_logprobs`, `logprobs` must be set to true.",
                parameter="top_logprobs",
            )


def _check_tool_usage(data: dict[str, Any]) -> dict[str, Any]:
    """vLLM's `check_tool_usage`: tools and tool_choice agree (an absent tool_choice
    becomes "auto" when there are tools)."""
    if data.get("tools") == []:
        raise InvalidRequest(
            "`tools` must not be an empty array. "
            "Either provide at least one tool or omit the field entirely.",
            parameter="tools",
        )
    if "tool_choice" not in data and data.get("tools"):
        data = {**data, "tool_choice": "auto"}
    choice = data.get("tool_choice")
    if choice is None or choice == "none":
        return data
    if data.get("tools") is None:
        raise InvalidRequest(
            "When using `tool_choice`, `tools` must be set.", parameter="tool_choice"
        )
    if choice not in ("auto", "required") and not isinstance(choice, dict):
        raise InvalidRequest(
            f"Invalid value for `tool_choice`: {choice}! "
            'Only named tools, "none", "auto" or "required" are supported.',
            parameter="tool_choice",
        )
    if isinstance(choice, dict):
        function = choice.get("function")
        if not isinstance(function, dict):
            raise InvalidRequest(
                f"Invalid value for `function`: `{function}` in `tool_choice`! {_CORRECT_USAGE}",
                parameter="tool_choice.function",
            )
        if "name" not in function:
            raise InvalidRequest(
                f"Expected field `name` in `function` in `tool_choice`! {_CORRECT_USAGE}",
                parameter="tool_choice.function.name",
            )
        name = function["name"]
        if not isinstance(name, str) or not name:
            raise InvalidRequest(
                f"Invalid `name` in `function`: `{name}` in `tool_choice`! {_CORRECT_USAGE}",
                parameter="tool_choice.function.name",
            )
        tools = data["tools"] if isinstance(data["tools"], list) else []
        if not any(
            isinstance(t, dict) and isinstance(t.get("function"), dict)
            and t["function"].get("name") == name
            for t in tools
        ):  # fmt: skip
            raise InvalidRequest(
                "The tool specified in `tool_choice` does not match any of the specified `tools`",
                parameter="tool_choice",
            )
    return data


class _ChatTemplating(OpenAIBaseModel):
    """What chat requests and chat tokenizing share."""

    messages: list[ChatMessage]
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False

    @model_validator(mode="before")
    @classmethod
    def _one_ending(cls, data: Any) -> Any:
        if isinstance(data, dict):
            _check_constraints(data, None)
            if data.get("continue_final_message") and data.get("add_generation_prompt"):
                raise InvalidRequest(
                    "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
                )
        return data


class ChatCompletionRequest(_ChatTemplating, SamplingRequest):
    logprobs: bool | None = False
    top_logprobs: int | None = 0
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    tools: list[ChatCompletionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = "none"
    parallel_tool_calls: bool | None = True
    include_reasoning: bool = True
    echo: bool = False

    @model_validator(mode="before")
    @classmethod
    def _chat_checks(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        _check_logprobs(data)
        so = data.get("structured_outputs")
        if (
            isinstance(so, dict)
            and any(so.get(k) is not None for k in ("json", "regex", "choice"))
            and data.get("tool_choice", "none") not in ("none", "auto", "required")
        ):
            raise InvalidRequest(
                "You can only either use constraints for structured outputs or tools, not both."
            )
        return _check_tool_usage(data)

    @property
    def output_limit(self) -> tuple[int | None, str]:
        """The requested output length and the name it came under."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"

    @property
    def num_logprobs(self) -> int | None:
        """How many alternatives per token (`SamplingParams.logprobs`); None: no logprobs."""
        return (self.top_logprobs or 0) if self.logprobs else None


class TokenizeCompletionRequest(OpenAIBaseModel):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


class TokenizeChatRequest(_ChatTemplating):
    model: str | None = None
    return_token_strs: bool | None = False
    tools: list[ChatCompletionTool] | None = None


class DetokenizeRequest(OpenAIBaseModel):
    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0, le=INT64_MAX)]]


# --- what vLLM answers ---------------------------------------------------------------------


def error_event(body: dict[str, Any]) -> bytes:
    """An error inside a stream: vLLM writes it with json.dumps (spaces), unlike chunks."""
    return sse_event(json.dumps(body).encode())


def usage(prompt_tokens: int, completion_tokens: int, **nulls: None) -> dict[str, Any]:
    """`UsageInfo` (`nulls`: the fields dumped as null)."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        **nulls,
    }


_CHOICE_NULLS: Final = dict.fromkeys(
    ("token_ids", "prompt_logprobs", "prompt_token_ids", "routed_experts", "weight_versions")
)
_MESSAGE_NULLS: Final = dict.fromkeys(("refusal", "annotations", "audio", "function_call"))


def _token_logprob(token_ids: Sequence[int], position: int, k: int, greedy: bool) -> TokenLogprob:
    previous = token_ids[position - 1] if position else -1
    top = tokenizer.VOCAB_SIZE if k == -1 else k + 1  # the most the answer shows
    return token_logprob(position, token_ids[position], top, greedy=greedy, previous=previous)


def _candidates(lp: TokenLogprob) -> list[Alternative]:
    """A position's logprobs in vLLM's order: the sampled token first, then the top ones."""
    return [lp, *(a for a in lp.top if a.token_id != lp.token_id)]


def chat_logprob(token_ids: Sequence[int], position: int, k: int, greedy: bool) -> dict[str, Any]:
    """`ChatCompletionLogProbsContent` of the token at `position` (`k`: `top_logprobs`)."""
    lp = _token_logprob(token_ids, position, k, greedy)
    shown = _candidates(lp) if k == -1 else _candidates(lp)[:k]
    top = [{"token": a.token, "logprob": a.logprob, "bytes": a.bytes} for a in shown]
    return {"token": lp.token, "logprob": lp.logprob, "bytes": lp.bytes, "top_logprobs": top}


def completion_logprobs(
    token_ids: Sequence[int], k: int, greedy: bool, offset: int = 0,
    positions: range | None = None,
) -> dict[str, Any]:  # fmt: skip
    """`CompletionLogProbs` of the tokens at `positions` (all by default), the first at
    `offset` in the text (`k`: `logprobs`, which shows k + 1)."""
    body: dict[str, list[Any]] = {
        "text_offset": [], "token_logprobs": [], "tokens": [], "top_logprobs": []
    }  # fmt: skip
    for position in range(len(token_ids)) if positions is None else positions:
        lp = _token_logprob(token_ids, position, k, greedy)
        shown = _candidates(lp) if k == -1 else _candidates(lp)[: k + 1]
        body["text_offset"].append(offset)
        body["token_logprobs"].append(lp.logprob)
        body["tokens"].append(lp.token)
        body["top_logprobs"].append({a.token: a.logprob for a in shown})
        offset += len(lp.token)
    return body


def _details(features: chat.Features | None, reasoning_tokens: int) -> dict[str, Any] | None:
    """`completion_tokens_details`: reasoning tokens, with a reasoning parser only."""
    if features is None or not features.reasoning:
        return None
    return {"reasoning_tokens": reasoning_tokens}


def prompt_tokens_details(
    outcome: Outcome | None, chat_response: bool, image_tokens: int = 0
) -> dict[str, Any] | None:
    """`usage.prompt_tokens_details` with `--enable-prompt-tokens-details`, from the request
    whose counts vLLM reports (`outcome`): chat's `_make_prompt_tokens_details` (cached,
    created and multimodal tokens), completions' `PromptTokenUsageInfo(cached_tokens=...)`."""
    if outcome is None:
        return None
    if not chat_response:
        return {"cached_tokens": outcome.cached_tokens, **_PROMPT_DETAILS_NULLS}
    return {
        "cached_tokens": outcome.cached_tokens,
        "created_cache_tokens": outcome.created_cache_tokens,
        "multimodal_tokens": {"image": image_tokens} if image_tokens else None,
    }


_PROMPT_DETAILS_NULLS: Final = {"created_cache_tokens": None, "multimodal_tokens": None}


def response(
    head: dict[str, Any], outcomes: Sequence[Outcome], prompt_tokens: int, fingerprint: str,
    prefixes: Sequence[str] = (), *, features: chat.Features | None = None,
    logprobs: int | None = None, prompt_details: bool = False, image_tokens: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """A whole `/v1/completions` or `/v1/chat/completions` response; `prefixes[prompt]` is
    prepended to a completion's text (echo); `features`: a chat request's; `logprobs`:
    alternatives per token asked (None: no logprobs); `prompt_details`:
    `--enable-prompt-tokens-details` (for completions, vLLM reports the last prompt's)."""
    chat_response = head["object"] == "chat.completion"
    choices = []
    thinking = 0
    for o in outcomes:
        if chat_response:
            feats = features or chat.Features()
            parsed = chat.parse(o.text, feats)
            message = {"role": "assistant", "content": parsed.content, **_MESSAGE_NULLS}
            if parsed.tool_calls:
                message["tool_calls"] = parsed.tool_calls
            message["reasoning"] = parsed.reasoning
            thinking += chat.reasoning_tokens(o.token_ids)
            lps = None
            if logprobs is not None and feats.show_reasoning:
                ids = o.token_ids
                lps = {
                    "content": [chat_logprob(ids, k, logprobs, o.greedy) for k in range(len(ids))]
                }
            choice: dict[str, Any] = {"index": o.index, "message": message, "logprobs": lps}
            reason = chat.finish_reason(o.finish_reason, feats, bool(parsed.tool_calls))
        else:
            text = (prefixes[o.prompt] if prefixes else "") + o.text
            lps = None
            if logprobs is not None:
                lps = completion_logprobs(o.token_ids, logprobs, o.greedy)
            choice = {"index": o.index, "text": text, "logprobs": lps}
            reason = o.finish_reason
        choice |= {"finish_reason": reason, "stop_reason": o.stop_reason}
        nulls = ("prompt_logprobs", "prompt_token_ids") if chat_response else ()
        choices.append(choice | {k: v for k, v in _CHOICE_NULLS.items() if k not in nulls})
    completion = sum(o.completion_tokens for o in outcomes)
    details = _details(features, thinking)
    reported = outcomes[-1] if prompt_details and outcomes else None
    body = {
        **head, "choices": choices, "service_tier": None, "system_fingerprint": fingerprint,
        "usage": usage(prompt_tokens, completion, prompt_tokens_details=None, completion_tokens_details=None)
        | {
            "prompt_tokens_details": prompt_tokens_details(reported, chat_response, image_tokens),
            "completion_tokens_details": details,
        },
    }  # fmt: skip
    if chat_response:
        body |= dict.fromkeys(("prompt_logprobs", "prompt_token_ids", "prompt_text"))
    return body | dict.fromkeys(("kv_transfer_params", "ec_transfer_params", "metrics"))


class Chunks:
    """The chunks of one streamed request (`head`: its id, object, created and model)."""

    def __init__(
        self, head: dict[str, Any], fingerprint: str, prompt_tokens: Sequence[int], *,
        include_usage: bool, continuous_usage: bool, prefixes: Sequence[str] = (),
        features: chat.Features | None = None, logprobs: int | None = None,
        prompt_details: bool = False, image_tokens: int = 0,
    ) -> None:  # fmt: skip
        self._head = head
        self._fingerprint = fingerprint
        self._prompt_tokens = prompt_tokens
        self._include_usage = include_usage
        self._continuous = continuous_usage
        self._prefixes = prefixes
        self._features = features or chat.Features()
        self._details = features is not None and features.reasoning
        self._logprobs = logprobs
        self._tokens: dict[int, int] = {}
        self._offsets: dict[int, int] = {}
        self._parsers: dict[int, chat.StreamParser] = {}
        self.chat = head["object"] == "chat.completion.chunk"
        self._prompt_details = prompt_details
        self._image_tokens = image_tokens
        self._first: Outcome | None = None  # the first request to answer: its usage details

    def _usage(self, prompt: int, done: int, reasoning_tokens: int) -> dict[str, Any]:
        details = {"reasoning_tokens": reasoning_tokens} if self._details else None
        return usage(prompt, done, completion_tokens_details=None) | {
            "completion_tokens_details": details
        }

    def role(self, index: int) -> bytes:
        """A chat choice's first chunk: the role and empty content."""
        delta = {"role": "assistant", "content": ""}
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
        body: dict[str, Any] = {**self._head, "choices": [choice]}
        if self._continuous:
            body["usage"] = self._usage(self._prompt_tokens[0], 0, 0)
        return sse_event(orjson.dumps({**body, "prompt_token_ids": None, "prompt_text": None}))

    def chunk(self, outcome: Outcome, step: Step) -> bytes | None:
        """The chunk of one step of a choice; None when vLLM sends none (its parser holds
        the text back, as for a tool call's opening tag)."""
        i = outcome.index
        first = i not in self._tokens
        if self._first is None:
            self._first = outcome
        done = self._tokens[i] = self._tokens.get(i, 0) + step.tokens
        finished = step.finish_reason is not None
        ids = outcome.token_ids
        shown = self._logprobs is not None and step.token_id is not None
        choice: dict[str, Any]
        if self.chat:
            parser = self._parsers.get(i)
            if parser is None:
                parser = self._parsers[i] = chat.StreamParser(self._features)
            delta = parser.feed(step.text)
            shown = shown and self._features.show_reasoning
            if delta is None and not finished and not shown:
                return None
            lps = None
            if shown and self._logprobs is not None:
                entry = chat_logprob(ids, step.position, self._logprobs, outcome.greedy)
                lps = {"content": [entry]}
            choice = {"index": i, "delta": delta or {}, "logprobs": lps}
            reason = step.finish_reason
            if reason is not None:
                reason = chat.finish_reason(reason, self._features, parser.called)
            choice["finish_reason"] = reason
            if finished:
                choice |= {"stop_reason": step.stop_reason, "token_ids": None}
                choice["weight_versions"] = None
            else:
                choice["token_ids"] = None
        else:
            echo = self._prefixes[outcome.prompt] if self._prefixes and first else ""
            offset = self._offsets.get(i, 0) + len(echo)
            lps = None
            if shown and self._logprobs is not None:
                at = range(step.position, step.position + 1)
                lps = completion_logprobs(ids, self._logprobs, outcome.greedy, offset, at)
            self._offsets[i] = offset + len(step.text)
            choice = {
                "index": i, "text": echo + step.text, "logprobs": lps,
                "finish_reason": step.finish_reason, "stop_reason": step.stop_reason,
                "prompt_token_ids": None, "token_ids": None, "weight_versions": None,
            }  # fmt: skip
        body: dict[str, Any] = {**self._head, "choices": [choice]}
        if self._continuous:
            if self.chat:
                thinking = self._parsers[i].reasoning_tokens
                body["usage"] = self._usage(self._prompt_tokens[outcome.prompt], done, thinking)
            else:
                body["usage"] = usage(self._prompt_tokens[outcome.prompt], done)
        if finished and not self._include_usage:
            body["system_fingerprint"] = self._fingerprint
        body["kv_transfer_params"] = None
        return sse_event(orjson.dumps(body))

    def final(self) -> bytes | None:
        """The usage-only chunk, when usage was asked for."""
        if not self._include_usage:
            return None
        total = usage(sum(self._prompt_tokens), sum(self._tokens.values()))
        if self._prompt_details and self._first is not None:
            # The usage chunk leaves nulls out.
            details = prompt_tokens_details(self._first, self.chat, self._image_tokens) or {}
            total["prompt_tokens_details"] = {k: v for k, v in details.items() if v is not None}
        if self._details:
            thinking = sum(p.reasoning_tokens for p in self._parsers.values())
            total["completion_tokens_details"] = {"reasoning_tokens": thinking}
        body = {
            **self._head,
            "choices": [],
            "usage": total,
            "system_fingerprint": self._fingerprint,
        }
        return sse_event(orjson.dumps(body))
