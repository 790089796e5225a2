"""Request bodies of vLLM 0.33's OpenAI routes (`openai/*/protocol.py`), as pydantic models.

Unknown fields are accepted (`extra="allow"`), as vLLM does; the removed `guided_*` fields
are among them and change nothing (`removed_guided_fields` lets the route warn about
them). The `mode="before"` checks raise `InvalidRequest`, which pydantic lets through
unwrapped, so they answer vLLM's 400 `BadRequestError` rather than a validation error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, model_validator

from switchyard.enginesim.vllm.errors import InvalidRequest

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_STOP_STRINGS = 4  # VLLM_MAX_STOP_STRINGS
MAX_COMPLETION_PROMPTS = 1024  # VLLM_MAX_COMPLETION_PROMPTS
REMOVED_GUIDED_FIELDS = frozenset(
    {
        "guided_json",
        "guided_regex",
        "guided_choice",
        "guided_grammar",
        "guided_decoding_backend",
        "guided_whitespace_pattern",
    }
)

StopParam: TypeAlias = str | Annotated[list[str], Field(max_length=MAX_STOP_STRINGS)] | None
Seed: TypeAlias = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)] | None
TokenId: TypeAlias = Annotated[int, Field(ge=0)]


def removed_guided_fields(body: dict[str, Any]) -> list[str]:
    """The removed `guided_*` fields a body carries (vLLM ignores them, with a warning)."""
    return sorted(REMOVED_GUIDED_FIELDS.intersection(body))


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

    json_: str | dict[str, Any] | None = Field(default=None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputsParams:
        kinds = (
            self.json_,
            self.regex,
            self.choice,
            self.grammar,
            self.json_object,
            self.structural_tag,
        )
        count = sum(kind is not None for kind in kinds)
        if count > 1:
            raise InvalidRequest(
                "You can only use one kind of structured outputs constraint "
                f"but multiple are specified: {self._as_dataclass_dict()}"
            )
        if count < 1:
            raise InvalidRequest(
                "You must use one kind of structured outputs constraint "
                f"but none are specified: {self._as_dataclass_dict()}"
            )
        return self

    def _as_dataclass_dict(self) -> dict[str, Any]:
        # The text vLLM shows is its dataclass's __dict__, private fields included.
        fields = {
            "json": self.json_,
            "regex": self.regex,
            "choice": self.choice,
            "grammar": self.grammar,
            "json_object": self.json_object,
            "disable_any_whitespace": self.disable_any_whitespace,
            "disable_additional_properties": self.disable_additional_properties,
            "whitespace_pattern": self.whitespace_pattern,
            "structural_tag": self.structural_tag,
        }
        return {**fields, "_backend": None, "_backend_was_auto": False}


def _constraint_count(data: dict[str, Any]) -> int:
    so = data.get("structured_outputs")
    if not isinstance(so, dict):
        return 0
    return sum(so.get(k) is not None for k in ("json", "regex", "choice"))


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
    def _response_format_has_schema(cls, data: Any) -> Any:
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
        return data

    @model_validator(mode="before")
    @classmethod
    def _stream_options_need_stream(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("stream_options") and not data.get("stream"):
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
        if _constraint_count(data) > 1:
            raise InvalidRequest(
                "You can only use one kind of constraints for structured "
                "outputs ('json', 'regex' or 'choice').",
                parameter="structured_outputs",
            )
        prompt = data.get("prompt")
        if prompt is None or prompt == "":
            raise InvalidRequest(
                "Either prompt or prompt_embeds must be provided and non-empty.",
                parameter="prompt",
            )
        if (
            isinstance(prompt, list)
            and prompt
            and not all(isinstance(p, int) for p in prompt)
            and len(prompt) > MAX_COMPLETION_PROMPTS
        ):
            raise InvalidRequest(
                f"prompt list length {len(prompt)} exceeds the maximum "
                f"allowed count of {MAX_COMPLETION_PROMPTS}. To increase this "
                "limit, set the VLLM_MAX_COMPLETION_PROMPTS "
                "environment variable.",
                parameter="prompt",
            )
        return data


class ContentPart(OpenAIBaseModel):
    type: str
    text: str | None = None


class ChatMessage(OpenAIBaseModel):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage]
    logprobs: bool | None = False
    top_logprobs: int | None = 0
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = "none"
    echo: bool = False
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False

    @model_validator(mode="before")
    @classmethod
    def _checks(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if _constraint_count(data) > 1:
            raise InvalidRequest(
                "You can only use one kind of constraints for structured "
                "outputs ('json', 'regex' or 'choice')."
            )
        if data.get("continue_final_message") and data.get("add_generation_prompt"):
            raise InvalidRequest(
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
            )
        return data

    @property
    def output_limit(self) -> tuple[int | None, str]:
        """The requested output length and the name it came under."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"


class TokenizeCompletionRequest(OpenAIBaseModel):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


class TokenizeChatRequest(OpenAIBaseModel):
    model: str | None = None
    messages: list[ChatMessage]
    add_generation_prompt: bool = True
    return_token_strs: bool | None = False
    continue_final_message: bool = False
    add_special_tokens: bool = False


class DetokenizeRequest(OpenAIBaseModel):
    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0, le=INT64_MAX)]]
