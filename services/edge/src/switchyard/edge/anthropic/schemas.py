"""The Messages API's request bodies, validated with pydantic in the `anthropic` SDK's shapes.

Unknown fields and unknown block types are refused with a 400 that names them (never
silently dropped); `cache_control` is accepted everywhere Anthropic accepts it and
ignored (engines cache prompt prefixes on their own). Server tools, `thinking` and the
fields of Anthropic's own platform (containers, MCP servers...) are not served: a 400 says so.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from switchyard.edge.schemas import (
    INT32_MAX,
    MAX_TOOL_DESCRIPTION,
    MAX_TOOLS,
    FunctionName,
    StopString,
    ToolCallId,
)

#: More than OpenAI's 4: Anthropic sets no small limit, and engines take a list.
MAX_STOP_SEQUENCES = 16
MAX_MESSAGES = 4096


class _Body(BaseModel):
    # Strict: a JSON 0 is not `false`, a "1" is not 1.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class CacheControl(_Body):
    """Accepted and ignored: prompt caching is the engine's (prefix caching), not asked for."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(_Body):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    #: Citations are answers' metadata; a request may only send none.
    citations: Annotated[list[Any], Field(max_length=0)] | None = None


class Base64Source(_Body):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: Annotated[str, Field(min_length=1)]


class UrlSource(_Body):
    type: Literal["url"]
    #: http(s), on the edge's image allow-list (the same rules as chat's image_url).
    url: Annotated[str, Field(min_length=1)]


class ImageBlock(_Body):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]
    cache_control: CacheControl | None = None


class ToolUseBlock(_Body):
    type: Literal["tool_use"]
    id: ToolCallId
    name: FunctionName
    input: dict[str, Any]
    cache_control: CacheControl | None = None


ToolResultPart = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class ToolResultBlock(_Body):
    type: Literal["tool_result"]
    tool_use_id: ToolCallId
    content: str | list[ToolResultPart] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


UserBlock = Annotated[TextBlock | ImageBlock | ToolResultBlock, Field(discriminator="type")]
AssistantBlock = Annotated[TextBlock | ToolUseBlock, Field(discriminator="type")]


class UserMessage(_Body):
    role: Literal["user"]
    content: str | Annotated[list[UserBlock], Field(min_length=1)]


class AssistantMessage(_Body):
    role: Literal["assistant"]
    content: str | Annotated[list[AssistantBlock], Field(min_length=1)]


Message = Annotated[UserMessage | AssistantMessage, Field(discriminator="role")]


class Tool(_Body):
    """A client tool (Anthropic's "custom" tool): its arguments' JSON schema."""

    name: FunctionName
    description: Annotated[str, Field(max_length=MAX_TOOL_DESCRIPTION)] | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    strict: bool | None = None
    cache_control: CacheControl | None = None

    @field_validator("input_schema")
    @classmethod
    def _an_object(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('must be a JSON schema of "type": "object"')
        return value


class ToolChoiceAuto(_Body):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(_Body):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(_Body):
    type: Literal["tool"]
    name: FunctionName
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(_Body):
    type: Literal["none"]


ToolChoice = Annotated[
    ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")
]


class Metadata(_Body):
    #: Accepted (Anthropic's end-user id); never sent to the engine.
    user_id: Annotated[str, Field(max_length=256)] | None = None


class ThinkingDisabled(_Body):
    type: Literal["disabled"]


#: The tool types Anthropic runs itself (web search, code execution, computer use...).
_SERVER_TOOL = (
    "server tools (type '{}') are not supported by this server: only client tools "
    "(name, description, input_schema)"
)
_THINKING = (
    "extended thinking is not supported by this server: leave thinking out or send "
    '{"type": "disabled"}'
)


class _Prompt(_Body):
    """What a generation and a token count share: the model and its input."""

    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    system: str | list[TextBlock] | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingDisabled | None = None
    cache_control: CacheControl | None = None

    @model_validator(mode="before")
    @classmethod
    def _served(cls, data: Any) -> Any:
        # Said here in plain words: the unions' own errors would list every alternative.
        if not isinstance(data, dict):
            return data
        for tool in data.get("tools") or ():
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind not in (None, "custom"):
                raise ValueError(_SERVER_TOOL.format(kind))
        thinking = data.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") != "disabled":
            raise ValueError(_THINKING)
        return data

    @property
    def system_text(self) -> str:
        if self.system is None or isinstance(self.system, str):
            return self.system or ""
        return "\n".join(block.text for block in self.system)


class MessagesRequest(_Prompt):
    """`POST /v1/messages` (the SDK's `MessageCreateParams`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "demo-vllm",
                    "max_tokens": 64,
                    "messages": [{"role": "user", "content": "Hello!"}],
                },
                {
                    "model": "demo-sglang",
                    "max_tokens": 256,
                    "stream": True,
                    "system": "Answer briefly.",
                    "messages": [{"role": "user", "content": "Weather in Paris?"}],
                    "tools": [
                        {
                            "name": "get_weather",
                            "input_schema": {
                                "type": "object",
                                "properties": {"city": {"type": "string"}},
                                "required": ["city"],
                            },
                        }
                    ],
                    "tool_choice": {"type": "auto"},
                },
            ]
        }
    )

    #: Required, as Anthropic requires it.
    max_tokens: Annotated[int, Field(ge=1, le=INT32_MAX)]
    stream: bool = False
    stop_sequences: Annotated[list[StopString], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = None
    metadata: Metadata | None = None
    #: Accepted and ignored: every request here is served the same way.
    service_tier: Literal["auto", "standard_only"] | None = None

    @field_validator("temperature", "top_p")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class CountTokensRequest(_Prompt):
    """`POST /v1/messages/count_tokens` (the SDK's `MessageCountTokensParams`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"model": "demo-vllm", "messages": [{"role": "user", "content": "Hello!"}]}
            ]
        }
    )
