"""OpenAI requests → the canonical inference request of the contract.

Cheap checks only, each a 400 naming its parameter: what a type cannot say (a tool message
answering an earlier call, a named tool_choice among the tools, `n` against the maximum, an
image's size and address) and the bounded size of every JSON schema (a walk that stops at
the first limit). What costs more — each schema against its metaschema, each image's base64
— is listed in `Canonical` and checked later, after rate limiting and off the event loop
(`switchyard.edge.checks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from switchyard.edge.errors import OpenAIError
from switchyard.edge.images import ImageRules, check_image_url
from switchyard.edge.schemas import (
    AssistantMessage,
    ChatCompletionRequest,
    ChoiceConstraint,
    CompletionRequest,
    ImagePart,
    JsonObjectFormat,
    JsonSchemaFormat,
    NamedToolChoice,
    TextFormat,
    ToolMessage,
    UserMessage,
    message_text,
)
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.servicekit.json_schema import SchemaLimits, SchemaTooLarge, check_bytes, check_shape

# OpenAI's "developer" role is the newer name of "system"; engines' templates know "system".
_ROLES = {"developer": "system"}
_TOOL_CHOICE_MODES = {
    "auto": pb.TOOL_CHOICE_MODE_AUTO,
    "none": pb.TOOL_CHOICE_MODE_NONE,
    "required": pb.TOOL_CHOICE_MODE_REQUIRED,
}

SCHEMA_PARAM = "response_format.json_schema.schema"


@dataclass(frozen=True, slots=True)
class Rules:
    """The settings a translation checks against."""

    schema_limits: SchemaLimits
    max_n: int
    images: ImageRules


@dataclass(frozen=True, slots=True)
class SchemaPart:
    """A JSON schema of the request, still to be checked against its metaschema."""

    param: str
    schema: dict[str, Any]
    text: bytes  # as sent to the adapter (the cache of schemas seen valid keys on it)


@dataclass(slots=True)
class Canonical:
    """The contract's request, and the expensive checks it still needs."""

    request: pb.GenerateRequest
    schemas: list[SchemaPart] = field(default_factory=list)
    #: (param, data URL) of each image sent inline (their base64 is still to be checked).
    images: list[tuple[str, str]] = field(default_factory=list)
    #: Images of any kind.
    image_count: int = 0

    @property
    def needs_checks(self) -> bool:
        return bool(self.schemas or self.images)


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


def _measured(schema: dict[str, Any], param: str, limits: SchemaLimits) -> bytes:
    """The schema's JSON text, if it is within the limits (400 naming the limit if not)."""
    text = orjson.dumps(schema)  # the body's size bounds this one
    try:
        check_bytes(len(text), limits)
        check_shape(schema, limits)
    except SchemaTooLarge as exc:
        raise OpenAIError.invalid(f"{param}: {exc}", param, "schema_too_large") from None
    return text


def _common(
    body: ChatCompletionRequest | CompletionRequest, canonical: Canonical, rules: Rules
) -> None:
    """What chat and completions share: n, and the output's constraint."""
    request = canonical.request
    if body.choices > rules.max_n:
        raise OpenAIError.invalid(
            f"n is {body.choices}; this server generates at most {rules.max_n} choices",
            "n",
            "invalid_value",
        )
    if body.n is not None:
        request.n = body.n
    fmt = body.response_format
    if body.structured_outputs is not None and not isinstance(fmt, TextFormat | None):
        raise OpenAIError.invalid(
            "structured_outputs and response_format cannot be used together; send one",
            "structured_outputs",
        )
    constraint = body.structured_outputs
    if isinstance(constraint, ChoiceConstraint):
        request.structured_output.choice.choices.extend(constraint.choice)
    elif constraint is not None:
        request.structured_output.regex = constraint.regex
    if isinstance(fmt, JsonObjectFormat):
        request.structured_output.json_object.SetInParent()
    elif isinstance(fmt, JsonSchemaFormat):
        schema = fmt.json_schema.schema_
        text = _measured(schema, SCHEMA_PARAM, rules.schema_limits)
        request.structured_output.json_schema = text.decode()
        canonical.schemas.append(SchemaPart(SCHEMA_PARAM, schema, text))


def chat_request(
    body: ChatCompletionRequest, model: str, request_id: str, rules: Rules
) -> Canonical:
    request = pb.GenerateRequest(
        request_id=request_id,
        model=model,
        sampling=_sampling(body, body.completion_limit),
        include_usage=True,  # the edge always accounts usage, whatever the client asked
    )
    canonical = Canonical(request)
    _messages(body, canonical, rules.images)
    _tools(body, canonical, rules.schema_limits)
    if body.top_logprobs is not None and not body.logprobs:
        raise OpenAIError.invalid(
            "top_logprobs is only allowed when logprobs is true", "top_logprobs"
        )
    if body.logprobs:
        request.logprobs.top_logprobs = body.top_logprobs or 0
    _common(body, canonical, rules)
    return canonical


def _messages(body: ChatCompletionRequest, canonical: Canonical, rules: ImageRules) -> None:
    messages = canonical.request.chat.messages
    calls: set[str] = set()  # the ids of the tool calls made so far
    for i, m in enumerate(body.messages):
        out = messages.add(role=_ROLES.get(m.role, m.role))
        if (
            isinstance(m, UserMessage)
            and not isinstance(m.content, str)
            and any(isinstance(p, ImagePart) for p in m.content)
        ):
            for j, part in enumerate(m.content):
                if isinstance(part, ImagePart):
                    param = f"messages[{i}].content[{j}].image_url.url"
                    _image(part, param, canonical, rules)
                    image = pb.Image(url=part.image_url.url, detail=part.image_url.detail or "")
                    out.parts.add(image=image)
                else:
                    out.parts.add(text=part.text)
        else:
            out.content = message_text(m)
        if not isinstance(m, ToolMessage) and m.name:
            out.name = m.name
        if isinstance(m, AssistantMessage):
            for call in m.tool_calls or ():
                calls.add(call.id)
                out.tool_calls.add(
                    id=call.id, name=call.function.name, arguments=call.function.arguments
                )
        elif isinstance(m, ToolMessage):
            if m.tool_call_id not in calls:
                raise OpenAIError.invalid(
                    f"messages[{i}]: a tool message must answer a tool call of an earlier "
                    f"assistant message; none has the id '{m.tool_call_id}'",
                    f"messages[{i}].tool_call_id",
                )
            out.tool_call_id = m.tool_call_id


def _image(part: ImagePart, param: str, canonical: Canonical, rules: ImageRules) -> None:
    if canonical.image_count >= rules.max_images:
        raise OpenAIError.invalid(
            f"{param}: at most {rules.max_images} images may be sent in one request",
            param,
            "too_many_images",
        )
    url = part.image_url.url
    check_image_url(url, param, rules)
    canonical.image_count += 1
    if url[:5].lower() == "data:":
        canonical.images.append((param, url))


def _tools(body: ChatCompletionRequest, canonical: Canonical, limits: SchemaLimits) -> None:
    request = canonical.request
    names: set[str] = set()
    # The limits bound each schema, and all of them together: the metaschema check costs
    # per subschema, whichever tool it is in.
    nodes = SchemaLimits(
        limits.max_bytes, limits.max_nodes, limits.max_depth + 1, limits.max_properties
    )
    for i, tool in enumerate(body.tools or ()):
        fn = tool.function
        if fn.name in names:
            raise OpenAIError.invalid(
                f"tools[{i}]: a function named '{fn.name}' is already defined",
                f"tools[{i}].function.name",
            )
        names.add(fn.name)
        out = request.tools.add(
            name=fn.name, description=fn.description or "", strict=bool(fn.strict)
        )
        if fn.parameters is not None:
            param = f"tools[{i}].function.parameters"
            text = _measured(fn.parameters, param, limits)
            out.parameters = text.decode()
            canonical.schemas.append(SchemaPart(param, fn.parameters, text))
    if body.tools:
        every = [s.schema for s in canonical.schemas]
        try:
            check_bytes(sum(len(s.text) for s in canonical.schemas), limits)
            check_shape(every, nodes)
        except SchemaTooLarge as exc:
            raise OpenAIError.invalid(
                f"tools: the parameters of all tools together: {exc}", "tools", "schema_too_large"
            ) from None
    choice = body.tool_choice
    if choice is not None and not body.tools:
        raise OpenAIError.invalid("tool_choice is only allowed when tools are given", "tool_choice")
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in names:
            raise OpenAIError.invalid(
                f"tool_choice names the function '{choice.function.name}', which is not "
                "among the tools",
                "tool_choice",
            )
        request.tool_choice.function = choice.function.name
    elif choice is not None:
        request.tool_choice.mode = _TOOL_CHOICE_MODES[choice]
    if body.parallel_tool_calls is not None and body.tools:
        request.parallel_tool_calls = body.parallel_tool_calls


def completion_request(
    body: CompletionRequest, model: str, request_id: str, rules: Rules
) -> Canonical:
    request = pb.GenerateRequest(
        request_id=request_id,
        model=model,
        prompt=body.prompt_text,
        sampling=_sampling(body, body.completion_limit),
        include_usage=True,
    )
    if not request.prompt:
        raise OpenAIError.invalid("prompt must not be empty", "prompt")
    canonical = Canonical(request)
    if body.logprobs is not None:
        request.logprobs.top_logprobs = body.logprobs
    _common(body, canonical, rules)
    return canonical


#: What the estimate counts for an image: a generous share of what engines count (a
#: 1024x1024 image is ~1,000-1,500 tokens in common vision models); the usage corrects it.
IMAGE_TOKENS_ESTIMATE = 1536


def estimate_prompt_tokens(request: pb.GenerateRequest) -> int:
    """An upper-leaning guess of the prompt's tokens (about 3 bytes each), for reservations only."""
    images = 0
    if request.WhichOneof("input") == "prompt":
        size = len(request.prompt.encode())
    else:
        size = 0
        for m in request.chat.messages:
            size += len(m.content.encode()) + 8
            for part in m.parts:
                if part.WhichOneof("kind") == "text":
                    size += len(part.text.encode())
                else:
                    images += 1
            for call in m.tool_calls:
                size += len(call.name) + len(call.arguments.encode()) + 16
        for tool in request.tools:
            size += len(tool.name) + len(tool.description.encode()) + len(tool.parameters) + 16
    if request.HasField("structured_output"):
        size += len(request.structured_output.json_schema)
    return size // 3 + 1 + images * IMAGE_TOKENS_ESTIMATE
