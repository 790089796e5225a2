"""OpenAI requests → the canonical inference request of the contract.

Cheap checks only: a response_format schema is measured against the limits here (a
bounded walk), but checked against its metaschema later, after rate limiting and off the
event loop (`switchyard.edge.checks`).
"""

from __future__ import annotations

from typing import Any

import orjson

from switchyard.edge.errors import OpenAIError
from switchyard.edge.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    JsonObjectFormat,
    JsonSchemaFormat,
)
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.servicekit.json_schema import SchemaLimits, SchemaTooLarge, check_bytes, check_shape

# OpenAI's "developer" role is the newer name of "system"; engines' templates know "system".
_ROLES = {"developer": "system"}


def _sampling(
    body: ChatCompletionRequest | CompletionRequest, max_tokens: int | None
) -> pb.SamplingParams:
    s = pb.SamplingParams(stop=body.stop_list, ignore_eos=bool(body.ignore_eos))
    if max_tokens is not None:
        s.max_tokens = max_tokens
    if body.temperature is not None:
        s.temperature = body.temperature
    if body.top_p is not None:
        s.top_p = body.top_p
    if body.top_k is not None:
        s.top_k = body.top_k
    if body.seed is not None:
        s.seed = body.seed
    if body.presence_penalty is not None:
        s.presence_penalty = body.presence_penalty
    if body.frequency_penalty is not None:
        s.frequency_penalty = body.frequency_penalty
    if body.repetition_penalty is not None:
        s.repetition_penalty = body.repetition_penalty
    return s


SCHEMA_PARAM = "response_format.json_schema.schema"


def response_schema(body: ChatCompletionRequest | CompletionRequest) -> dict[str, Any] | None:
    """The request's response_format JSON schema, if it has one."""
    fmt = body.response_format
    return fmt.json_schema.schema_ if isinstance(fmt, JsonSchemaFormat) else None


def _structured(
    body: ChatCompletionRequest | CompletionRequest,
    request: pb.GenerateRequest,
    limits: SchemaLimits,
) -> None:
    fmt = body.response_format
    if isinstance(fmt, JsonObjectFormat):
        request.structured_output.json_object.SetInParent()
    elif isinstance(fmt, JsonSchemaFormat):
        schema = fmt.json_schema.schema_
        text = orjson.dumps(schema)  # the body's size bounds this one
        try:
            check_bytes(len(text), limits)
            check_shape(schema, limits)
        except SchemaTooLarge as exc:
            raise OpenAIError.invalid(
                f"{SCHEMA_PARAM}: {exc}", SCHEMA_PARAM, "schema_too_large"
            ) from None
        request.structured_output.json_schema = text.decode()


def chat_request(
    body: ChatCompletionRequest, model: str, request_id: str, limits: SchemaLimits
) -> pb.GenerateRequest:
    request = pb.GenerateRequest(
        request_id=request_id,
        model=model,
        sampling=_sampling(body, body.completion_limit),
        include_usage=True,  # the edge always accounts usage, whatever the client asked
    )
    messages = request.chat.messages
    for m in body.messages:
        messages.add(role=_ROLES.get(m.role, m.role), content=m.text, name=m.name or "")
    _structured(body, request, limits)
    return request


def completion_request(
    body: CompletionRequest, model: str, request_id: str, limits: SchemaLimits
) -> pb.GenerateRequest:
    request = pb.GenerateRequest(
        request_id=request_id,
        model=model,
        prompt=body.prompt_text,
        sampling=_sampling(body, body.completion_limit),
        include_usage=True,
    )
    if not request.prompt:
        raise OpenAIError.invalid("prompt must not be empty", "prompt")
    _structured(body, request, limits)
    return request


def estimate_prompt_tokens(request: pb.GenerateRequest) -> int:
    """An upper-leaning guess of the prompt's tokens (about 3 bytes each), for reservations only."""
    if request.WhichOneof("input") == "prompt":
        size = len(request.prompt.encode())
    else:
        size = sum(len(m.content.encode()) + 8 for m in request.chat.messages)
    if request.HasField("structured_output"):
        size += len(request.structured_output.json_schema)
    return size // 3 + 1
