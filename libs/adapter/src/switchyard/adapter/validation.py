"""Checks of a canonical request that hold for every engine, before any engine is called.

Engine-specific limits (context length, what a constraint kind means) stay with the engine
and its translation; this module rejects what is malformed whatever the engine.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

import orjson

from switchyard.adapter.translation import features_used, unsupported_feature
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
#: OpenAI's rule for function names.
TOOL_NAME: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: Image URLs the contract admits (the edge decides which http(s) hosts may pass).
IMAGE_URL_SCHEMES: Final = ("data:", "http://", "https://")
#: `ADAPTER_MAX_N`'s default.
DEFAULT_MAX_N: Final = 8
#: OpenAI's limit; an engine's own lower one is the engine's to answer.
MAX_TOP_LOGPROBS: Final = 20
#: The contract's limit (OpenAI's, and TGI's and vLLM's default).
MAX_STOP = 4
#: Schemas found valid lately: a request's schema is parsed twice (here, then by the
#: translation), and applications send the same one again and again.
_CHECKED = CheckedSchemas(64)


def validate(
    request: pb.GenerateRequest,
    served_model_name: str,
    *,
    engine: str = "",
    features: frozenset[str] | None = None,
    max_n: int = DEFAULT_MAX_N,
) -> None:
    """Raise `InferenceError` (INVALID_ARGUMENT or NOT_FOUND) for a request no engine should see.

    `features`: what the engine's translation can carry (None: no gate); a request using
    another is refused with UNSUPPORTED_FEATURE, naming the feature and `engine`.
    """
    if not request.model:
        raise InferenceError.invalid("model is required", "model")
    if request.model != served_model_name:
        raise InferenceError.model_not_found(request.model)
    if features is not None:
        _gate(request, engine, features)
    _validate_input(request)
    _validate_sampling(request.sampling)
    if request.HasField("structured_output"):
        validate_structured_output(request.structured_output)
    _validate_choices(request, max_n)
    _validate_tools(request)


_FEATURE_PARAMS: Final = {"tools": "tools", "images": "messages", "logprobs": "logprobs", "n": "n"}


def _gate(request: pb.GenerateRequest, engine: str, features: frozenset[str]) -> None:
    for feature in features_used(request):
        if feature not in features:
            raise unsupported_feature(
                f"{feature} are not supported by the {engine or 'engine'} adapter"
                if feature in ("tools", "images", "logprobs")
                else f"{feature} > 1 is not supported by the {engine or 'engine'} adapter",
                _FEATURE_PARAMS[feature],
            )


def validate_embed(request: pb.EmbedRequest, served_model_name: str) -> None:
    """Raise `InferenceError` for an embedding request no engine should see: no input, an
    input of neither kind or an empty token list, texts and token ids mixed (no engine's
    `input` takes both), `dimensions` below 1. Empty texts are the engine's to judge (vLLM
    embeds them, SGLang refuses them)."""
    if not request.model:
        raise InferenceError.invalid("model is required", "model")
    if request.model != served_model_name:
        raise InferenceError.model_not_found(request.model)
    if not request.inputs:
        raise InferenceError.invalid("at least one input is required", "input")
    kinds = set()
    for i, item in enumerate(request.inputs):
        kind = item.WhichOneof("kind")
        if kind is None:
            raise InferenceError.invalid(f"input[{i}] is neither text nor token ids", "input")
        if kind == "tokens" and not item.tokens.ids:
            raise InferenceError.invalid(f"input[{i}] is an empty list of token ids", "input")
        kinds.add(kind)
    if len(kinds) > 1:
        raise InferenceError.invalid("inputs must be all texts or all token ids", "input")
    if request.HasField("dimensions") and request.dimensions < 1:
        raise InferenceError.invalid(
            f"dimensions must be at least 1, got {request.dimensions}", "dimensions"
        )


def _validate_choices(request: pb.GenerateRequest, max_n: int) -> None:
    if request.n > max_n:
        raise InferenceError.invalid(f"n must be at most {max_n}, got {request.n}", "n")
    if request.logprobs.top_logprobs > MAX_TOP_LOGPROBS:
        raise InferenceError.invalid(
            f"top_logprobs must be at most {MAX_TOP_LOGPROBS}, got {request.logprobs.top_logprobs}",
            "top_logprobs",
        )


def _validate_tools(request: pb.GenerateRequest) -> None:
    chat = request.WhichOneof("input") == "chat"
    if not chat and (request.tools or request.HasField("tool_choice")):
        raise InferenceError.invalid("tools need chat messages, not a prompt", "tools")
    names: set[str] = set()
    for i, tool in enumerate(request.tools):
        param = f"tools[{i}].function"
        if not TOOL_NAME.fullmatch(tool.name):
            raise InferenceError.invalid(
                f"{param}.name must match {TOOL_NAME.pattern}, got {tool.name!r}", f"{param}.name"
            )
        if tool.name in names:
            raise InferenceError.invalid(
                f"tool names must be unique: {tool.name!r} is declared twice", f"{param}.name"
            )
        names.add(tool.name)
        if tool.parameters:
            schema = parse_json_schema(tool.parameters, f"{param}.parameters")
            if not isinstance(schema, dict) or schema.get("type", "object") != "object":
                raise InferenceError.invalid(
                    f"{param}.parameters must be a JSON Schema of an object",
                    f"{param}.parameters",
                )
    if request.HasField("tool_choice"):
        _validate_tool_choice(request.tool_choice, names)


def _validate_tool_choice(choice: pb.ToolChoice, names: set[str]) -> None:
    kind = choice.WhichOneof("kind")
    if kind == "function":
        if choice.function not in names:
            raise InferenceError.invalid(
                f"tool_choice names {choice.function!r}, which is not among the tools",
                "tool_choice",
            )
        return
    if kind != "mode" or choice.mode == pb.TOOL_CHOICE_MODE_UNSPECIFIED:
        raise InferenceError.invalid("tool_choice has no mode or function", "tool_choice")
    if choice.mode != pb.TOOL_CHOICE_MODE_NONE and not names:
        raise InferenceError.invalid("tool_choice needs tools", "tool_choice")


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
        calls: set[str] = set()  # ids of the tool calls made so far
        for i, message in enumerate(messages):
            if message.role not in ROLES:
                raise InferenceError.invalid(
                    f"messages[{i}].role must be one of {sorted(ROLES)}, got {message.role!r}",
                    f"messages[{i}].role",
                )
            _validate_message(i, message, calls)


def _validate_message(i: int, message: pb.ChatMessage, calls: set[str]) -> None:
    """Parts, an assistant's tool calls, a tool result's call id (`calls`: the ids so far)."""
    if message.parts and message.content:
        raise InferenceError.invalid(
            f"messages[{i}] has both content and parts", f"messages[{i}].content"
        )
    for j, part in enumerate(message.parts):
        param = f"messages[{i}].content[{j}]"
        kind = part.WhichOneof("kind")
        if kind is None:
            raise InferenceError.invalid(f"{param} is neither text nor an image", param)
        if kind == "image" and not part.image.url.startswith(IMAGE_URL_SCHEMES):
            raise InferenceError.invalid(
                f"{param}.image_url.url must be a data URL or an http(s) URL",
                f"{param}.image_url.url",
            )
    if message.tool_calls and message.role != "assistant":
        raise InferenceError.invalid(
            f"messages[{i}]: only assistant messages carry tool_calls",
            f"messages[{i}].tool_calls",
        )
    for j, call in enumerate(message.tool_calls):
        if not call.id or not call.name:
            raise InferenceError.invalid(
                f"messages[{i}].tool_calls[{j}] needs an id and a function name",
                f"messages[{i}].tool_calls[{j}]",
            )
        calls.add(call.id)
    if message.role == "tool":
        if message.tool_call_id not in calls:
            raise InferenceError.invalid(
                f"messages[{i}] answers tool call {message.tool_call_id!r}, which no earlier "
                "assistant message made",
                f"messages[{i}].tool_call_id",
            )
    elif message.tool_call_id:
        raise InferenceError.invalid(
            f"messages[{i}]: only tool messages carry a tool_call_id",
            f"messages[{i}].tool_call_id",
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


def parse_json_schema(text: str, param: str = "json_schema") -> dict[str, Any]:
    """The JSON Schema document in `text`, within the contract's size limits and checked
    against its metaschema (the check costs ~0.3 ms per subschema on the event loop; the
    limits bound it, and a schema seen valid lately is not checked again). Errors name
    `param`."""
    raw = text.encode()
    try:
        check_bytes(len(raw), CONTRACT_LIMITS)
        schema = orjson.loads(raw)
    except InvalidJsonSchema as exc:
        raise InferenceError.invalid(f"{param}: {exc}", param) from None
    except orjson.JSONDecodeError as exc:
        raise InferenceError.invalid(f"{param} is not valid JSON: {exc}", param) from None
    digest = CheckedSchemas.digest(raw)
    if digest in _CHECKED and isinstance(schema, dict):
        return schema
    try:
        check_shape(schema, CONTRACT_LIMITS)
        checked = check_json_schema(schema)
    except InvalidJsonSchema as exc:
        raise InferenceError.invalid(f"{param}: {exc}", param) from None
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
