"""The items of a conversation: checked as sent (`input`), kept in one form, read back as chat.

Every item the store keeps and `input_items.list` lists is in the form OpenAI answers it
(`ResponseItem`): each with an id and a status, a message's content always a list of
parts. Those are also what a later response reads (`previous_response_id`), together
with the previous response's output, so both go through `chat_messages`.

Items this server cannot pass to an engine (files, item references, built-in tools'
calls) are refused with a 400 naming the item.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchyard.edge.errors import OpenAIError

#: The item types `input` takes.
ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")


def new_id(prefix: str) -> str:
    """An OpenAI-style id: `msg_…`, `fc_…`, `rs_…`, `resp_…`."""
    return f"{prefix}_{secrets.token_hex(24)}"


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


Id = Annotated[str, Field(min_length=1, max_length=256)]
Status = Literal["in_progress", "completed", "incomplete"]


class InputText(_Item):
    type: Literal["input_text"]
    text: str


class InputImage(_Item):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] = "auto"


class OutputText(_Item):
    type: Literal["output_text"]
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] | None = None


class Refusal(_Item):
    type: Literal["refusal"]
    refusal: str


class Message(_Item):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[dict[str, Any]]
    id: Id | None = None
    status: Status | None = None
    phase: str | None = None


class FunctionCall(_Item):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=256)
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    arguments: str
    id: Id | None = None
    status: Status | None = None


class FunctionCallOutput(_Item):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=256)
    output: str | list[dict[str, Any]]
    id: Id | None = None
    status: Status | None = None


class SummaryText(_Item):
    type: Literal["summary_text"]
    text: str


class ReasoningText(_Item):
    type: Literal["reasoning_text"]
    text: str


class Reasoning(_Item):
    type: Literal["reasoning"]
    summary: list[SummaryText]
    content: list[ReasoningText] | None = None
    encrypted_content: None = None  # engines have no encrypted reasoning to read back
    id: Id | None = None
    status: Status | None = None


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], value: Any, param: str) -> M:
    """`value` as `model`, or a 400 naming the first thing wrong in it under `param`."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        where = ".".join([param, *(str(p) for p in first["loc"])])
        raise OpenAIError.invalid(f"Invalid request: {where}: {first['msg']}", where) from None


def _unsupported(what: str, param: str) -> OpenAIError:
    return OpenAIError.invalid(
        f"{param}: {what} is not supported by this server", param, "unsupported_parameter"
    )


def _input_parts(parts: list[dict[str, Any]], role: str, param: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        where = f"{param}[{j}]"
        kind = part.get("type")
        if role == "assistant" and kind in ("output_text", "input_text"):
            text = (
                validated(OutputText, part, where).text
                if kind == "output_text"
                else validated(InputText, part, where).text
            )
            out.append({"type": "output_text", "text": text, "annotations": []})
        elif role == "assistant" and kind == "refusal":
            out.append({"type": "refusal", "refusal": validated(Refusal, part, where).refusal})
        elif kind == "input_text":
            out.append({"type": "input_text", "text": validated(InputText, part, where).text})
        elif kind == "input_image" and role == "user":
            image = validated(InputImage, part, where)
            if image.file_id is not None or not image.image_url:
                raise _unsupported("an image by file_id (send image_url)", f"{where}.file_id")
            out.append(
                {
                    "type": "input_image",
                    "image_url": image.image_url,
                    "detail": image.detail,
                    "file_id": None,
                }
            )
        elif kind in ("input_file", "input_audio"):
            raise _unsupported(f"content of type '{kind}'", f"{where}.type")
        else:
            raise OpenAIError.invalid(
                f"{where}.type: a {role} message cannot hold content of type {kind!r}",
                f"{where}.type",
            )
    return out


def normalize(items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`input` as the items kept for it: each checked, with an id and a status."""
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        param = f"input[{i}]"
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            message = validated(Message, item, param)
            content = message.content
            parts = (
                [{"type": "input_text", "text": content}] if isinstance(content, str) else content
            )
            out.append(
                {
                    "id": message.id or new_id("msg"),
                    "type": "message",
                    "role": message.role,
                    "status": "completed",
                    "content": _input_parts(parts, message.role, f"{param}.content"),
                }
            )
        elif kind == "function_call":
            call = validated(FunctionCall, item, param)
            out.append(
                {
                    "id": call.id or new_id("fc"),
                    "type": "function_call",
                    "status": "completed",
                    "call_id": call.call_id,
                    "name": call.name,
                    "arguments": call.arguments,
                }
            )
        elif kind == "function_call_output":
            result = validated(FunctionCallOutput, item, param)
            output = result.output
            if not isinstance(output, str):
                parts = _input_parts(output, "tool", f"{param}.output")
                output = "".join(p["text"] for p in parts)
            out.append(
                {
                    "id": result.id or new_id("fco"),
                    "type": "function_call_output",
                    "status": "completed",
                    "call_id": result.call_id,
                    "output": output,
                }
            )
        elif kind == "reasoning":
            reasoning = validated(Reasoning, item, param)
            kept: dict[str, Any] = {
                "id": reasoning.id or new_id("rs"),
                "type": "reasoning",
                "summary": [s.model_dump() for s in reasoning.summary],
            }
            if reasoning.content is not None:
                kept["content"] = [c.model_dump() for c in reasoning.content]
            out.append(kept)
        elif kind is None:
            raise OpenAIError.invalid(
                f"{param}: an item needs a 'type' (or a 'role', for a message)", f"{param}.type"
            )
        else:
            raise OpenAIError.invalid(
                f"{param}.type: items of type {kind!r} are not supported by this server "
                f"(supported: {', '.join(ITEM_TYPES)})",
                f"{param}.type",
                "unsupported_parameter",
            )
    return out


def _text(parts: list[dict[str, Any]]) -> str:
    return "".join(p.get("text") or p.get("refusal") or "" for p in parts)


def chat_messages(
    items: list[dict[str, Any]], origins: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Kept items (`normalize`'s form, or a response's output) as chat messages, and for
    each message the param of the item it came from. A function call joins the assistant
    message before it; reasoning passed back is not shown to the engine again (engines'
    chat templates drop earlier turns' reasoning)."""
    messages: list[dict[str, Any]] = []
    where: list[str] = []
    calls: set[str] = set()
    for item, origin in zip(items, origins, strict=True):
        kind = item["type"]
        if kind == "message":
            role, parts = item["role"], item["content"]
            if role == "assistant":
                messages.append({"role": "assistant", "content": _text(parts)})
            elif role == "user" and any(p["type"] == "input_image" for p in parts):
                content = [
                    {"type": "text", "text": p["text"]}
                    if p["type"] == "input_text"
                    else {
                        "type": "image_url",
                        "image_url": {"url": p["image_url"], "detail": p["detail"]},
                    }
                    for p in parts
                ]
                messages.append({"role": "user", "content": content})
            else:
                messages.append({"role": role, "content": _text(parts)})
            where.append(origin)
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            calls.add(item["call_id"])
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if not last["content"]:
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
                where.append(origin)
        elif kind == "function_call_output":
            if item["call_id"] not in calls:
                raise OpenAIError.invalid(
                    f"{origin}: no function_call before it has the call_id "
                    f"'{item['call_id']}' (send the call, or its previous_response_id, with it)",
                    f"{origin}.call_id",
                )
            messages.append(
                {"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]}
            )
            where.append(origin)
    return messages, where
