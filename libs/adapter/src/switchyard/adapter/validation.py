"""Checks of a canonical request that hold for every engine, before any engine is called.

Engine-specific limits (context length, what a constraint kind means) stay with the engine
and its translation; this module rejects what is malformed whatever the engine.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.servicekit.json_schema import (
    CONTRACT_LIMITS,
    CheckedSchemas,
    InvalidJsonSchema,
    check_bytes,
    check_json_schema,
    check_shape,
)

ROLES = frozenset({"system", "user", "assistant", "tool"})
#: The contract's limit (OpenAI's, and TGI's and vLLM's default).
MAX_STOP = 4
#: Schemas found valid lately: a request's schema is parsed twice (here, then by the
#: translation), and applications send the same one again and again.
_CHECKED = CheckedSchemas(64)


def validate(request: pb.GenerateRequest, served_model_name: str) -> None:
    """Raise `InferenceError` (INVALID_ARGUMENT or NOT_FOUND) for a request no engine should see."""
    if not request.model:
        raise InferenceError.invalid("model is required", "model")
    if request.model != served_model_name:
        raise InferenceError.model_not_found(request.model)
    _validate_input(request)
    _validate_sampling(request.sampling)
    if request.HasField("structured_output"):
        validate_structured_output(request.structured_output)


def _validate_input(request: pb.GenerateRequest) -> None:
    kind = request.WhichOneof("input")
    if kind is None:
        raise InferenceError.invalid("one of prompt or chat messages is required", "input")
    if kind == "prompt" and not request.prompt:
        raise InferenceError.invalid("prompt must not be empty", "prompt")
    if kind == "chat":
        messages = request.chat.messages
        if not messages:
            raise InferenceError.invalid("chat needs at least one message", "messages")
        for i, message in enumerate(messages):
            if message.role not in ROLES:
                raise InferenceError.invalid(
                    f"messages[{i}].role must be one of {sorted(ROLES)}, got {message.role!r}",
                    f"messages[{i}].role",
                )


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise InferenceError.invalid(f"{name} must be a finite number", name)


def _validate_sampling(s: pb.SamplingParams) -> None:
    if s.HasField("max_tokens") and s.max_tokens < 1:
        raise InferenceError.invalid(
            f"max_tokens must be at least 1, got {s.max_tokens}", "max_tokens"
        )
    if s.HasField("temperature"):
        _finite("temperature", s.temperature)
        if s.temperature < 0:
            raise InferenceError.invalid(
                f"temperature must be non-negative, got {s.temperature:g}", "temperature"
            )
    if s.HasField("top_p"):
        _finite("top_p", s.top_p)
        if not 0 < s.top_p <= 1:
            raise InferenceError.invalid(f"top_p must be in (0, 1], got {s.top_p:g}", "top_p")
    if s.HasField("top_k") and s.top_k < 1:
        raise InferenceError.invalid(f"top_k must be at least 1 when set, got {s.top_k}", "top_k")
    for name in ("presence_penalty", "frequency_penalty"):
        if s.HasField(name):
            value = getattr(s, name)
            _finite(name, value)
            if not -2 <= value <= 2:
                raise InferenceError.invalid(f"{name} must be in [-2, 2], got {value:g}", name)
    if s.HasField("repetition_penalty"):
        _finite("repetition_penalty", s.repetition_penalty)
        if s.repetition_penalty <= 0:
            raise InferenceError.invalid(
                f"repetition_penalty must be positive, got {s.repetition_penalty:g}",
                "repetition_penalty",
            )
    if len(s.stop) > MAX_STOP:
        raise InferenceError.invalid(f"at most {MAX_STOP} stop strings, got {len(s.stop)}", "stop")
    if any(not stop for stop in s.stop):
        raise InferenceError.invalid("stop strings must not be empty", "stop")


def parse_json_schema(text: str) -> dict[str, Any]:
    """The JSON Schema document in `text`, within the contract's size limits and checked
    against its metaschema (the check costs ~0.3 ms per subschema on the event loop; the
    limits bound it, and a schema seen valid lately is not checked again)."""
    raw = text.encode()
    try:
        check_bytes(len(raw), CONTRACT_LIMITS)
        schema = orjson.loads(raw)
    except InvalidJsonSchema as exc:
        raise InferenceError.invalid(f"json_schema: {exc}", "json_schema") from None
    except orjson.JSONDecodeError as exc:
        raise InferenceError.invalid(
            f"json_schema is not valid JSON: {exc}", "json_schema"
        ) from None
    digest = CheckedSchemas.digest(raw)
    if digest in _CHECKED and isinstance(schema, dict):
        return schema
    try:
        check_shape(schema, CONTRACT_LIMITS)
        checked = check_json_schema(schema)
    except InvalidJsonSchema as exc:
        raise InferenceError.invalid(f"json_schema: {exc}", "json_schema") from None
    _CHECKED.add(digest)
    return checked


def validate_structured_output(so: pb.StructuredOutput) -> None:
    kind = so.WhichOneof("kind")
    if kind is None:
        # Set but empty, or a kind from a newer contract this adapter does not know.
        raise InferenceError.unsupported(
            "structured_output has no constraint kind this adapter understands "
            "(expected one of json_schema, json_object, regex, choice)",
            "structured_output",
        )
    if kind == "json_schema":
        parse_json_schema(so.json_schema)
    elif kind == "regex":
        if not so.regex:
            raise InferenceError.invalid("regex must not be empty", "regex")
        try:
            re.compile(so.regex)
        except re.error as exc:
            raise InferenceError.invalid(f"regex does not compile: {exc}", "regex") from None
    elif kind == "choice" and (not so.choice.choices or any(not c for c in so.choice.choices)):
        raise InferenceError.invalid("choice needs at least one non-empty string", "choice")
