"""The OpenAI request bodies the edge accepts, validated with pydantic.

Unknown fields are refused (OpenAI does the same), and every number is bounded to what
the contract can carry, so hostile input is a 400, never a 500. Shapes follow the
`openai` SDK's request types. Features the platform does not serve (logit_bias, echo,
best_of, suffix) are typed so that only their "off" value validates: the OpenAPI
document says exactly what is accepted, and anything else is a 400 saying the feature is
not supported, never silently dropped.

What a type cannot say (a tool message answering an earlier call, a named tool_choice
among the tools, an image's size and address, `n` against the configured maximum) is
checked when the body is translated (`switchyard.edge.convert`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
#: OpenAI's limits: tools per request, alternatives per token (chat), logprobs (completions).
MAX_TOOLS = 128
MAX_TOP_LOGPROBS = 20
MAX_COMPLETION_LOGPROBS = 5
#: A hard ceiling on `n` whatever the settings say (EDGE_MAX_N may only be lower).
MAX_N = 128
MAX_TOOL_DESCRIPTION = 8192
#: vLLM's structured_outputs extra: bounds on its choice list and regex.
MAX_CHOICES = 256
MAX_CHOICE_LENGTH = 1024
MAX_REGEX_LENGTH = 4096

MaxTokens = Annotated[int, Field(ge=1, le=INT32_MAX)]
Seed = Annotated[int, Field(ge=-(2**63), le=INT64_MAX)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
StopString = Annotated[str, Field(min_length=1, max_length=1024)]
#: OpenAI's rule for function names (engines' tool parsers expect it too).
FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
ToolCallId = Annotated[str, Field(min_length=1, max_length=256)]
Choices = Annotated[int, Strict(), Field(ge=1, le=MAX_N)]

#: Fields accepted only with their "off" value (see `unsupported_message`).
UNSUPPORTED = frozenset({"logit_bias", "echo", "best_of", "suffix"})
_OFF = "Not supported by this server: leave it out, or send its default."


def unsupported_message(field: str) -> str:
    return f"{field} is not supported by this server (leave it out or send its default)"


def _false(value: bool) -> bool:
    if value:
        raise ValueError("must be false")
    return value


# Not Literal[False] / Literal[1]: literal matching goes by equality, and 0 == False, 1 == True.
OnlyFalse = Annotated[
    bool, Strict(), AfterValidator(_false), WithJsonSchema({"const": False, "description": _OFF})
]
OnlyOne = Annotated[int, Strict(), Field(ge=1, le=1, description=_OFF)]


class _Body(BaseModel):
    # Strict: a JSON 0 is not `false`, a "1" is not 1 (the OpenAPI document says what is meant).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class StreamOptions(_Body):
    include_usage: bool | None = None


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ImageUrl(_Body):
    #: A data URL (data:image/png;base64,...), or an http(s) URL on the allow-list.
    url: Annotated[str, Field(min_length=1)]
    detail: Literal["auto", "low", "high", "original"] | None = None


class ImagePart(_Body):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Body):
    name: FunctionName
    #: The arguments as JSON text (as the model wrote them: not parsed here).
    arguments: str


class ToolCall(_Body):
    id: ToolCallId
    type: Literal["function"]
    function: FunctionCall


def _text(content: str | list[TextPart] | list[ContentPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content if isinstance(part, TextPart))


class SystemMessage(_Body):
    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: Annotated[str, Field(max_length=256)] | None = None


class UserMessage(_Body):
    role: Literal["user"]
    content: str | list[ContentPart]
    name: Annotated[str, Field(max_length=256)] | None = None


class AssistantMessage(_Body):
    role: Literal["assistant"]
    #: May be null when the message made tool calls.
    content: str | list[TextPart] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_TOOLS)] | None = None
    #: Sent back by SDKs that echo a whole answer; never reaches the model (chat templates
    #: drop earlier turns' reasoning, and a refusal is only ever null here). `reasoning` is
    #: vLLM's newer name of `reasoning_content`.
    refusal: None = None
    reasoning_content: str | None = None
    reasoning: str | None = None

    @model_validator(mode="after")
    def _says_something(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs content or tool_calls")
        return self


class ToolMessage(_Body):
    role: Literal["tool"]
    content: str | list[TextPart]
    #: The id of the earlier assistant tool call this message answers.
    tool_call_id: ToolCallId


ChatMessage = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


def message_text(message: SystemMessage | UserMessage | AssistantMessage | ToolMessage) -> str:
    """A message's text parts, joined (images are carried apart)."""
    return _text(message.content)


class FunctionDefinition(_Body):
    name: FunctionName
    description: Annotated[str, Field(max_length=MAX_TOOL_DESCRIPTION)] | None = None
    #: The JSON Schema of the arguments (checked against its metaschema after rate limits).
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(_Body):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Body):
    name: FunctionName


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ChoiceConstraint(_Body):
    """The output is exactly one of these strings."""

    choice: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_CHOICE_LENGTH)]],
        Field(min_length=1, max_length=MAX_CHOICES),
    ]


class RegexConstraint(_Body):
    """The whole output matches this regular expression."""

    regex: Annotated[str, Field(min_length=1, max_length=MAX_REGEX_LENGTH)]


#: vLLM's `structured_outputs` extra (what its clients send in `extra_body`): one of these.
StructuredOutputs = ChoiceConstraint | RegexConstraint


class JsonSchemaSpec(_Body):
    model_config = ConfigDict(populate_by_name=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    schema_: Annotated[dict[str, Any], Field(alias="schema")] = Field(default_factory=dict)
    strict: bool | None = None


class TextFormat(_Body):
    type: Literal["text"]


class JsonObjectFormat(_Body):
    type: Literal["json_object"]


class JsonSchemaFormat(_Body):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class _Sampling(_Body):
    """Fields shared by chat and text completions."""

    model: Annotated[str, Field(min_length=1, max_length=256)]
    max_tokens: MaxTokens | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    #: Choices to generate (at most EDGE_MAX_N; each may use max_tokens).
    n: Choices | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: StopString | Annotated[list[StopString], Field(max_length=4)] | None = None
    seed: Seed | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: Annotated[dict[str, float], Field(max_length=0, description=_OFF)] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    response_format: ResponseFormat | None = None
    # Extensions most open-model servers accept (vLLM, SGLang).
    top_k: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0, le=10.0)] | None = None
    ignore_eos: bool | None = None
    #: vLLM's extra: `{"choice": [...]}` or `{"regex": "..."}` (not with response_format).
    structured_outputs: StructuredOutputs | None = None

    @field_validator(
        "temperature", "top_p", "presence_penalty", "frequency_penalty", "repetition_penalty"
    )
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def choices(self) -> int:
        return self.n or 1


class ChatCompletionRequest(_Sampling):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "demo-vllm",
                    "messages": [{"role": "user", "content": "Hello!"}],
                    "max_tokens": 32,
                },
                {
                    "model": "demo-sglang",
                    "messages": [{"role": "user", "content": "Hi"}],
                    "stream": True,
                    "stream_options": {"include_usage": True},
                    "max_tokens": 16,
                },
                {
                    "model": "demo-vllm",
                    "messages": [{"role": "user", "content": "Weather in Paris?"}],
                    "tools": [
                        {
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "parameters": {
                                    "type": "object",
                                    "properties": {"city": {"type": "string"}},
                                    "required": ["city"],
                                },
                            },
                        }
                    ],
                    "tool_choice": "auto",
                },
            ]
        }
    )

    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=4096)]
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Strict(), Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None

    @property
    def completion_limit(self) -> int | None:
        """max_completion_tokens (OpenAI's current name) wins over the older max_tokens."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model": "demo-tgi", "prompt": "Once upon a time", "max_tokens": 16}]
        }
    )

    prompt: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=1)]
    )
    echo: OnlyFalse | None = None
    best_of: OnlyOne | None = None
    #: The log-probabilities of this many most likely tokens at each position, besides the
    #: chosen one (OpenAI's limit: 5).
    logprobs: Annotated[int, Strict(), Field(ge=0, le=MAX_COMPLETION_LOGPROBS)] | None = None
    suffix: Annotated[Literal[""], Field(description=_OFF)] | None = None

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def completion_limit(self) -> int:
        # OpenAI's legacy completions default to 16 tokens.
        return self.max_tokens or 16


# -- embeddings ----------------------------------------------------------------------------

#: Token ids travel as uint32 (the contract's `TokenIds`); the vocabulary is the engine's check.
TokenId = Annotated[int, Field(ge=0, le=2**32 - 1)]
TokenList = Annotated[list[TokenId], Field(min_length=1)]
NonEmptyText = Annotated[str, Field(min_length=1)]


_INPUT_SHAPE = (
    "must be a string, a list of strings, a list of token ids or a list of lists of token "
    f"ids (token ids are integers from 0 to {2**32 - 1})"
)


def _is_id(value: object) -> bool:
    return type(value) is int and 0 <= value < 2**32  # not bool, a subclass of int


class EmbeddingRequest(_Body):
    """OpenAI's `POST /v1/embeddings` body (the SDK's `EmbeddingCreateParams`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"model": "demo-embed", "input": "The food was delicious."},
                {
                    "model": "demo-embed",
                    "input": ["first document", "second document"],
                    "encoding_format": "base64",
                    "dimensions": 128,
                },
            ]
        }
    )

    model: Annotated[str, Field(min_length=1, max_length=256)]
    #: One text, several texts, one input of token ids, or several inputs of token ids. An
    #: empty string is passed on: whether it may be embedded is the engine's to say.
    input: (
        str
        | Annotated[list[str], Field(min_length=1)]
        | Annotated[list[TokenId], Field(min_length=1)]
        | Annotated[list[TokenList], Field(min_length=1)]
    )
    encoding_format: Literal["float", "base64"] | None = None
    #: Shorten the vectors to this many dimensions (models trained for it only).
    dimensions: Annotated[int, Field(ge=1, le=2**32 - 1)] | None = None
    #: Accepted (OpenAI's end-user id); never sent to the engine.
    user: Annotated[str, Field(max_length=256)] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _one_shape(cls, value: object) -> object:
        # Said here in plain words: the union's own errors would list every alternative.
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise PydanticCustomError("input_shape", _INPUT_SHAPE)
        if not value:
            raise PydanticCustomError("empty_input", "must not be an empty list")
        if all(isinstance(item, str) for item in value) or all(_is_id(i) for i in value):
            return value
        if all(isinstance(item, list) and all(_is_id(i) for i in item) for item in value):
            if not all(value):
                raise PydanticCustomError(
                    "empty_input", "must not contain an empty list of token ids"
                )
            return value
        raise PydanticCustomError("input_shape", _INPUT_SHAPE)

    @property
    def inputs(self) -> list[str | list[int]]:
        """The inputs, one per vector asked for (a flat list of ids is one input)."""
        if isinstance(self.input, str):
            return [self.input]
        items: list[str | int | list[int]] = list(self.input)
        if isinstance(items[0], int):
            return [[i for i in items if isinstance(i, int)]]
        return [i for i in items if not isinstance(i, int)]
