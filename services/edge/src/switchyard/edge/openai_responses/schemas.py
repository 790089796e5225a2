"""The body of `POST /v1/responses` (OpenAI's `ResponseCreateParams`), as this server takes it.

The top level is a pydantic model (unknown fields are refused, as every body of the edge);
`input`'s items, `tools`, `tool_choice` and `text` are kept as JSON here and checked item
by item in `items` and `convert`, so that each refusal names the one item or tool it is
about (`input[3].type`, `tools[0].type`) instead of a union's every branch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Items of `input`, tools, metadata entries: bounds of the body's own shape.
MAX_ITEMS = 4096
MAX_TOOLS = 128
MAX_METADATA = 16


class _Body(BaseModel):
    # As the edge's other bodies: a JSON 0 is not `false`, a "1" is not 1.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class Reasoning(_Body):
    """Accepted and echoed: engines decide their own reasoning (its effort is not passed on)."""

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class StreamOptions(_Body):
    include_obfuscation: bool | None = None


MetadataKey = Annotated[str, Field(max_length=64)]
MetadataValue = Annotated[str, Field(max_length=512)]


class CreateResponse(_Body):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_ITEMS)]
    )
    instructions: str | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    parallel_tool_calls: bool | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA)] | None = (
        None
    )
    user: Annotated[str, Field(max_length=256)] | None = None
    store: bool = True
    previous_response_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    background: bool = False
    reasoning: Reasoning | None = None
    # Accepted as OpenAI's clients send them; nothing here depends on them.
    include: Annotated[list[str], Field(max_length=16)] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    prompt_cache_key: Annotated[str, Field(max_length=256)] | None = None
    safety_identifier: Annotated[str, Field(max_length=256)] | None = None
