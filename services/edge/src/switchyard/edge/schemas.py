"""The OpenAI request bodies the edge accepts, validated with pydantic.

Unknown fields are refused (OpenAI does the same), and every number is bounded to what
the contract can carry, so hostile input is a 400, never a 500. Features the platform
does not serve (tools, logprobs, n > 1, images) are typed so that only their "off" value
validates: the OpenAPI document says exactly what is accepted, and anything else is a 400
saying the feature is not supported, never silently dropped.
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
)

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

MaxTokens = Annotated[int, Field(ge=1, le=INT32_MAX)]
Seed = Annotated[int, Field(ge=-(2**63), le=INT64_MAX)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
StopString = Annotated[str, Field(min_length=1, max_length=1024)]

#: Fields accepted only with their "off" value (see `unsupported_message`).
UNSUPPORTED = frozenset(
    {
        "n",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "tools",
        "tool_choice",
        "echo",
        "best_of",
        "suffix",
    }
)
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


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart]
    name: Annotated[str, Field(max_length=256)] | None = None
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content or ())


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
    n: OnlyOne | None = None
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
            ]
        }
    )

    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=4096)]
    max_completion_tokens: MaxTokens | None = None
    logprobs: OnlyFalse | None = None
    top_logprobs: Annotated[None, Field(description=_OFF)] = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=0, description=_OFF)] | None = None
    tool_choice: Annotated[Literal["none"], Field(description=_OFF)] | None = None
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
    logprobs: Annotated[None, Field(description=_OFF)] = None
    suffix: Annotated[Literal[""], Field(description=_OFF)] | None = None

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def completion_limit(self) -> int:
        # OpenAI's legacy completions default to 16 tokens.
        return self.max_tokens or 16
