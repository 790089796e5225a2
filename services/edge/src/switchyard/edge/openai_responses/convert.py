"""A Responses request → an OpenAI chat request → the contract's canonical request.

The Responses API says in its own words what chat says (items for messages, `text.format`
for `response_format`, `max_output_tokens`...). Translating it into a chat request and
then through `convert.chat_request` gives it every check chat has (schemas' bounds, the
images' rules, named tool choices, n) with no second copy of them; only the params named
in errors are put back into the Responses API's words.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from switchyard.edge.convert import Canonical, Rules, SchemaPart, chat_request
from switchyard.edge.errors import OpenAIError
from switchyard.edge.openai_responses.items import chat_messages, validated
from switchyard.edge.openai_responses.schemas import CreateResponse, _Body
from switchyard.edge.schemas import ChatCompletionRequest

#: The built-in tools of OpenAI's platform: named in the refusal as what they are.
BUILT_IN_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_2025_08_26",
        "web_search_preview_2025_03_11",
        "file_search",
        "computer",
        "computer_use",
        "computer_use_preview",
        "code_interpreter",
        "mcp",
        "image_generation",
        "local_shell",
        "shell",
        "apply_patch",
        "custom",
        "tool_search",
        "namespace",
    }
)


class FunctionTool(_Body):
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(_Body):
    type: Literal["function"]
    name: str


class TextFormat(_Body):
    type: Literal["text"]


class JsonObjectFormat(_Body):
    type: Literal["json_object"]


class JsonSchemaFormat(_Body):
    type: Literal["json_schema"]
    name: str
    # `schema` would shadow BaseModel.schema: an alias, as chat's JsonSchemaSpec has.
    schema_: Annotated[dict[str, Any], Field(alias="schema")] = Field(default_factory=dict)
    description: str | None = None
    strict: bool | None = None


class TextConfig(_Body):
    format: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


_FORMATS: dict[str, type[_Body]] = {
    "text": TextFormat,
    "json_object": JsonObjectFormat,
    "json_schema": JsonSchemaFormat,
}


def tools(body: CreateResponse) -> list[FunctionTool]:
    out: list[FunctionTool] = []
    for i, tool in enumerate(body.tools or ()):
        kind = tool.get("type")
        if kind != "function":
            what = "built-in tool" if kind in BUILT_IN_TOOLS else "tool type"
            raise OpenAIError.invalid(
                f"tools[{i}].type: the {what} {kind!r} is not supported by this server; "
                "only function tools are",
                f"tools[{i}].type",
                "unsupported_parameter",
            )
        out.append(validated(FunctionTool, tool, f"tools[{i}]"))
    return out


def tool_choice(body: CreateResponse) -> str | dict[str, Any] | None:
    """The chat request's tool_choice."""
    choice = body.tool_choice
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise OpenAIError.invalid(
                f"tool_choice: {choice!r} is not one of 'auto', 'none', 'required'", "tool_choice"
            )
        return choice
    if choice.get("type") != "function":
        raise OpenAIError.invalid(
            f"tool_choice: a choice of type {choice.get('type')!r} is not supported by this "
            "server (only 'auto', 'none', 'required' or a function by name)",
            "tool_choice.type",
            "unsupported_parameter",
        )
    named = validated(NamedFunction, choice, "tool_choice")
    return {"type": "function", "function": {"name": named.name}}


def text_format(body: CreateResponse) -> dict[str, Any] | None:
    """The chat request's response_format, for `text.format`."""
    if body.text is None:
        return None
    config = validated(TextConfig, body.text, "text")
    fmt = config.format
    if fmt is None:
        return None
    model = _FORMATS.get(str(fmt.get("type")))
    if model is None:
        raise OpenAIError.invalid(
            f"text.format.type: {fmt.get('type')!r} is not one of "
            "'text', 'json_object', 'json_schema'",
            "text.format.type",
        )
    checked = validated(model, fmt, "text.format")
    if isinstance(checked, JsonSchemaFormat):
        spec: dict[str, Any] = {"name": checked.name, "schema": checked.schema_}
        if checked.description is not None:
            spec["description"] = checked.description
        if checked.strict is not None:
            spec["strict"] = checked.strict
        return {"type": "json_schema", "json_schema": spec}
    return {"type": fmt["type"]}


# Chat's params in errors, put back into the Responses API's.
_RENAMES = (
    (re.compile(r"^response_format\.json_schema\.schema"), "text.format.schema"),
    (re.compile(r"^response_format\.json_schema\."), "text.format."),
    (re.compile(r"^response_format"), "text.format"),
    (re.compile(r"^tools\[(\d+)\]\.function\."), r"tools[\1]."),
    (re.compile(r"^max_completion_tokens"), "max_output_tokens"),
)
_MESSAGE = re.compile(r"^messages\[(\d+)\](.*)$")
_CONTENT = re.compile(r"^\.content\[(\d+)\]\.image_url\.url$")


def renamed(param: str | None, where: list[str]) -> str | None:
    """`param` (a chat request's) as the Responses request names it."""
    if param is None:
        return None
    message = _MESSAGE.match(param)
    if message is not None:
        index, rest = int(message.group(1)), message.group(2)
        origin = where[index] if index < len(where) else "input"
        content = _CONTENT.match(rest)
        return f"{origin}.content[{content.group(1)}].image_url" if content else origin
    for pattern, replacement in _RENAMES:
        if pattern.match(param):
            return pattern.sub(replacement, param, count=1)
    return param


def _rename_error(error: OpenAIError, where: list[str]) -> OpenAIError:
    param = renamed(error.param, where)
    if param != error.param and error.param is not None:
        error.message = error.message.replace(error.param, param or "")
        error.param = param
    return error


def chat_body(
    body: CreateResponse, items: list[dict[str, Any]], origins: list[str]
) -> tuple[ChatCompletionRequest, list[str]]:
    """The chat request saying what `body` says, over the conversation `items` (the
    previous responses' items, then this one's input), and each message's origin."""
    messages, where = chat_messages(items, origins)
    if body.instructions:
        messages.insert(0, {"role": "system", "content": body.instructions})
        where.insert(0, "instructions")
    chat: dict[str, Any] = {"model": body.model, "messages": messages, "stream": body.stream}
    function_tools = tools(body)
    if function_tools:
        chat["tools"] = [
            {
                "type": "function",
                "function": t.model_dump(exclude={"type"}, exclude_none=True),
            }
            for t in function_tools
        ]
    choice = tool_choice(body)
    if choice is not None and function_tools:
        chat["tool_choice"] = choice
    elif isinstance(choice, dict):
        raise OpenAIError.invalid(
            "tool_choice names a function, but no tools are given", "tool_choice"
        )
    if body.parallel_tool_calls is not None and function_tools:
        chat["parallel_tool_calls"] = body.parallel_tool_calls
    fmt = text_format(body)
    if fmt is not None:
        chat["response_format"] = fmt
    sampling = {
        "max_completion_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "user": body.user,
    }
    chat |= {name: value for name, value in sampling.items() if value is not None}
    try:
        return ChatCompletionRequest.model_validate(chat), where
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        param = renamed(loc, where) or "input"
        raise OpenAIError.invalid(f"Invalid request: {param}: {first['msg']}", param) from None


def canonical_request(
    body: CreateResponse,
    items: list[dict[str, Any]],
    origins: list[str],
    model: str,
    request_id: str,
    rules: Rules,
) -> Canonical:
    """The contract's request for `body` over `items`, with its expensive checks' params
    named as the Responses API names them."""
    chat, where = chat_body(body, items, origins)
    try:
        canonical = chat_request(chat, model, request_id, rules)
    except OpenAIError as error:
        raise _rename_error(error, where) from None
    canonical.schemas = [
        SchemaPart(renamed(p.param, where) or p.param, p.schema, p.text) for p in canonical.schemas
    ]
    canonical.images = [(renamed(param, where) or param, url) for param, url in canonical.images]
    return canonical
