"""Request bodies of SGLang's OpenAI-compatible routes (`entrypoints/openai/protocol.py`),
the fields a simulated text model uses. Validated once per request (pydantic), never per
token; unknown fields are ignored, as SGLang's models ignore them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

DEFAULT_MODEL_NAME = "default"


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

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


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
                name = schema.get("title", "Schema")
                rest = {k: v for k, v in fmt.items() if k != "schema"}
                values = {
                    **values,
                    "response_format": {**rest, "json_schema": {"name": name, "schema": schema}},
                }
        return values


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
