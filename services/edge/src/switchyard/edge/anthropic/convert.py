"""A Messages API body → OpenAI's chat request → the contract's canonical request.

One translation onto the contract: the body becomes a `ChatCompletionRequest` and
`convert.chat_request` makes the canonical request with every check the chat route makes
(tool schemas, images' addresses and sizes, a tool result answering an earlier call).

The mapping: `system` → a system message; a user turn's `tool_result` blocks → one tool
message each (`is_error` marks its text "Error: "; its images follow in a user message,
as chat templates take images from users only), its text and images → a user message;
an assistant turn's text → its content and its `tool_use` blocks → its tool calls (the
input as JSON text); `tool_choice` auto / any / tool / none → auto / required / the
named function / none, `disable_parallel_tool_use` → `parallel_tool_calls: false`. A
final assistant turn (Anthropic's prefill, which the model continues) is refused: the
contract cannot ask an engine to continue a turn.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from switchyard.edge.anthropic.schemas import (
    AssistantMessage,
    Base64Source,
    CountTokensRequest,
    ImageBlock,
    MessagesRequest,
    TextBlock,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)
from switchyard.edge.convert import Canonical, Rules, chat_request
from switchyard.edge.errors import OpenAIError
from switchyard.edge.schemas import ChatCompletionRequest

#: What the model reads before a tool result that Anthropic's client marked `is_error`.
ERROR_PREFIX = "Error: "


def messages_request(
    body: MessagesRequest | CountTokensRequest, model: str, request_id: str, rules: Rules
) -> Canonical:
    """The canonical request for `body` (a 400 `OpenAIError` for what the checks refuse)."""
    canonical = chat_request(chat_body(body), model, request_id, rules)
    if isinstance(body, MessagesRequest) and body.stop_sequences:
        # Set here, not through the chat body: OpenAI allows 4 stop strings, Anthropic more.
        canonical.request.sampling.stop[:] = body.stop_sequences
    return canonical


def chat_body(body: MessagesRequest | CountTokensRequest) -> ChatCompletionRequest:
    """OpenAI's chat request saying what `body` says."""
    chat: dict[str, Any] = {"model": body.model, "messages": _messages(body)}
    if isinstance(body, MessagesRequest):
        chat["max_tokens"] = body.max_tokens
        chat["stream"] = body.stream
        for name in ("temperature", "top_p", "top_k"):
            value = getattr(body, name)
            if value is not None:
                chat[name] = value
    _tools(body, chat)
    try:
        return ChatCompletionRequest.model_validate(chat)
    except ValidationError as exc:
        # The Anthropic body validated, so this is a shape chat cannot carry.
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise OpenAIError.invalid(f"Invalid request: {where}: {first['msg']}") from None


def _messages(body: MessagesRequest | CountTokensRequest) -> list[dict[str, Any]]:
    if isinstance(body.messages[-1], AssistantMessage):
        # Anthropic continues a final assistant turn (a prefill); the contract has no way to
        # say "continue", and a new turn after it would be a different answer.
        raise OpenAIError.invalid(
            f"messages.{len(body.messages) - 1}: a final assistant message (prefill) is not "
            "supported by this server: end with a user message",
            "messages",
        )
    out: list[dict[str, Any]] = []
    if body.system is not None:
        out.append({"role": "system", "content": body.system_text})
    for i, message in enumerate(body.messages):
        if isinstance(message, AssistantMessage):
            out.append(_assistant(message))
        else:
            out.extend(_user(message, i))
    return out


def _assistant(message: AssistantMessage) -> dict[str, Any]:
    if isinstance(message.content, str):
        return {"role": "assistant", "content": message.content}
    text = "".join(b.text for b in message.content if isinstance(b, TextBlock))
    calls = [
        {
            "id": b.id,
            "type": "function",
            "function": {"name": b.name, "arguments": orjson.dumps(b.input).decode()},
        }
        for b in message.content
        if isinstance(b, ToolUseBlock)
    ]
    out: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        out["tool_calls"] = calls
    return out


def _image_part(block: ImageBlock) -> dict[str, Any]:
    source = block.source
    if isinstance(source, Base64Source):
        url = f"data:{source.media_type};base64,{source.data}"
    else:
        url = source.url
    return {"type": "image_url", "image_url": {"url": url}}


def _user(message: UserMessage, index: int) -> list[dict[str, Any]]:
    """A user turn: its tool results (first, as Anthropic requires), then what the user says."""
    if isinstance(message.content, str):
        return [{"role": "user", "content": message.content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []  # the user's own text and images
    result_images: list[dict[str, Any]] = []
    for j, block in enumerate(message.content):
        if isinstance(block, ToolResultBlock):
            if parts:
                raise OpenAIError.invalid(
                    f"messages.{index}.content.{j}: tool_result blocks must come first in a "
                    "user message, before any text or image",
                    f"messages.{index}.content",
                )
            text, images = _result(block)
            out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
            result_images.extend(images)
        elif isinstance(block, ImageBlock):
            parts.append(_image_part(block))
        else:
            parts.append({"type": "text", "text": block.text})
    parts = result_images + parts
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        content: str | list[dict[str, Any]] = (
            "".join(p["text"] for p in parts) if only_text else parts
        )
        out.append({"role": "user", "content": content})
    return out


def _result(block: ToolResultBlock) -> tuple[str, list[dict[str, Any]]]:
    """A tool result's text, and its images as chat image parts."""
    content = block.content
    if content is None or isinstance(content, str):
        text = content or ""
        images: list[dict[str, Any]] = []
    else:
        text = "\n".join(b.text for b in content if isinstance(b, TextBlock))
        images = [_image_part(b) for b in content if isinstance(b, ImageBlock)]
    if block.is_error:
        text = ERROR_PREFIX + text
    return text, images


def _tools(body: MessagesRequest | CountTokensRequest, chat: dict[str, Any]) -> None:
    choice = body.tool_choice
    if body.tools:
        chat["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "parameters": tool.input_schema,
                    **({"description": tool.description} if tool.description else {}),
                    **({"strict": tool.strict} if tool.strict is not None else {}),
                },
            }
            for tool in body.tools
        ]
    elif isinstance(choice, ToolChoiceAny | ToolChoiceTool):
        raise OpenAIError.invalid(
            f"tool_choice.type '{choice.type}' needs tools: none are given", "tool_choice"
        )
    else:
        return  # auto or none with no tools: nothing to choose from, nothing to say
    if choice is None:
        return
    if isinstance(choice, ToolChoiceNone):
        chat["tool_choice"] = "none"
        return
    if isinstance(choice, ToolChoiceTool):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    else:
        chat["tool_choice"] = "required" if isinstance(choice, ToolChoiceAny) else "auto"
    if choice.disable_parallel_tool_use:
        chat["parallel_tool_calls"] = False
