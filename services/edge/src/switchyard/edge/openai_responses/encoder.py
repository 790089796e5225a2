"""A generation as OpenAI's Responses API answers it: the `Response` object, or its events.

The encoder builds the response's output items as the contract's messages come
(reasoning, the assistant's message, function calls, each its own item, in the order the
engine produced them) and, for a stream, says so in events numbered from 0
(`sequence_number`): `response.created`, `response.in_progress`, then for each item
`response.output_item.added` … its deltas … `response.output_item.done`, and last
`response.completed` or `response.incomplete` with the whole response. An item is closed
when the next one opens, or at the finish.

It is also the request's `ErrorDialect`: an error before the stream is OpenAI's JSON
error; after it, the stream's last event is `response.failed`, numbered in sequence.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from switchyard.edge.errors import OPENAI_ERRORS, OpenAIError
from switchyard.edge.openai_responses.items import new_id
from switchyard.inference.v1 import inference_pb2 as pb

_EMPTY_TEXT = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}


def usage_object(usage: pb.Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _error_code(error: OpenAIError) -> str:
    if error.status == 429:
        return "rate_limit_exceeded"
    if error.status == 400:
        return "invalid_prompt"
    return "server_error"


def _message(text: str, status: str) -> dict[str, Any]:
    return {
        "id": new_id("msg"),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{**_EMPTY_TEXT, "text": text}],
    }


def _reasoning(text: str, status: str) -> dict[str, Any]:
    return {
        "id": new_id("rs"),
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": status,
    }


def _function_call(call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": new_id("fc"),
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


class _Open:
    """An output item being streamed: its index and the text it gathers."""

    __slots__ = ("index", "item", "pieces")

    def __init__(self, index: int, item: dict[str, Any]) -> None:
        self.index = index
        self.item = item
        self.pieces: list[str] = []


class ResponseEncoder:
    """One response's encoding (a `GenerationEncoder` and an `ErrorDialect`).

    `head` is the Response object without what the generation decides (status, output,
    usage, errors): its id, `created_at`, model and the request's echoed fields."""

    choices = 1

    def __init__(self, head: dict[str, Any]) -> None:
        self.head = head
        self.output: list[dict[str, Any]] = []
        self.status = "in_progress"
        self.tokens: dict[str, Any] | None = None  # the usage object
        self.error: dict[str, Any] | None = None
        #: The Response object once the generation ended (completed or incomplete).
        self.final: dict[str, Any] | None = None
        self._sequence = 0
        self._current: _Open | None = None  # the item open for text or reasoning
        self._calls: dict[int, _Open] = {}  # function calls open, by the engine's index
        self._finished = False

    # -- the Response object ------------------------------------------------------------------

    def response(self) -> dict[str, Any]:
        """The Response object as it stands."""
        incomplete = {"reason": "max_output_tokens"} if self.status == "incomplete" else None
        body = {
            **self.head,
            "status": self.status,
            "error": self.error,
            "incomplete_details": incomplete,
            "output": self.output,
            "usage": self.tokens,
        }
        if self.status in ("completed", "incomplete"):
            body["completed_at"] = int(time.time())
        return body

    @property
    def finished(self) -> bool:
        """The generation ended (completed or incomplete): a response to keep."""
        return self.final is not None and self.status in ("completed", "incomplete")

    # -- events -------------------------------------------------------------------------------

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        body = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"

    def opening(self) -> bytes:
        snapshot = self.response()
        return self._event("response.created", {"response": snapshot}) + self._event(
            "response.in_progress", {"response": snapshot}
        )

    def _add(self, item: dict[str, Any]) -> _Open:
        opened = _Open(len(self.output), item)
        self.output.append(item)
        return opened

    def _open(self, kind: str) -> tuple[_Open, bytes]:
        """A new message or reasoning item (the one open before is closed)."""
        events = self._close_all("completed")
        if kind == "message":
            opened = self._add(_message("", "in_progress"))
            part = _EMPTY_TEXT
        else:
            opened = self._add(_reasoning("", "in_progress"))
            part = {"type": "reasoning_text", "text": ""}
        item = opened.item
        events += self._event(
            "response.output_item.added",
            {"output_index": opened.index, "item": {**item, "content": []}},
        )
        events += self._event(
            "response.content_part.added",
            {"item_id": item["id"], "output_index": opened.index, "content_index": 0, "part": part},
        )
        self._current = opened
        return opened, events

    def _close_current(self, status: str) -> bytes:
        opened, self._current = self._current, None
        if opened is None:
            return b""
        item = opened.item
        text = "".join(opened.pieces)
        where = {"item_id": item["id"], "output_index": opened.index, "content_index": 0}
        if item["type"] == "message":
            part = {**_EMPTY_TEXT, "text": text}
            events = self._event(
                "response.output_text.done", {**where, "text": text, "logprobs": []}
            )
        else:
            part = {"type": "reasoning_text", "text": text}
            events = self._event("response.reasoning_text.done", {**where, "text": text})
        item["content"] = [part]
        item["status"] = status
        events += self._event("response.content_part.done", {**where, "part": part})
        return events + self._event(
            "response.output_item.done", {"output_index": opened.index, "item": item}
        )

    def _close_calls(self, status: str) -> bytes:
        events = b""
        for opened in self._calls.values():
            item = opened.item
            if item["status"] != "in_progress":
                continue
            item["arguments"] = "".join(opened.pieces)
            item["status"] = status
            where = {"item_id": item["id"], "output_index": opened.index}
            events += self._event(
                "response.function_call_arguments.done",
                {**where, "arguments": item["arguments"], "name": item["name"]},
            )
            events += self._event(
                "response.output_item.done", {"output_index": opened.index, "item": item}
            )
        return events

    def _close_all(self, status: str) -> bytes:
        return self._close_current(status) + self._close_calls(status)

    def delta(self, message: pb.GenerateStreamResponse) -> bytes:
        events = b""
        if message.reasoning_delta:
            opened = self._current
            if opened is None or opened.item["type"] != "reasoning":
                opened, events = self._open("reasoning")
            opened.pieces.append(message.reasoning_delta)
            events += self._event(
                "response.reasoning_text.delta",
                {
                    "item_id": opened.item["id"],
                    "output_index": opened.index,
                    "content_index": 0,
                    "delta": message.reasoning_delta,
                },
            )
        if message.text_delta:
            opened = self._current
            if opened is None or opened.item["type"] != "message":
                opened, opening = self._open("message")
                events += opening
            opened.pieces.append(message.text_delta)
            events += self._event(
                "response.output_text.delta",
                {
                    "item_id": opened.item["id"],
                    "output_index": opened.index,
                    "content_index": 0,
                    "delta": message.text_delta,
                    "logprobs": [],
                },
            )
        for call in message.tool_calls:
            events += self._call_delta(call)
        return events

    def _call_delta(self, delta: pb.ToolCallDelta) -> bytes:
        events = b""
        opened = self._calls.get(delta.index)
        if opened is None or delta.id:
            # A call's first fragment (its id and name): the item before it is done.
            events += self._close_all("completed")
            opened = self._add(_function_call(delta.id, delta.name, "", "in_progress"))
            self._calls[delta.index] = opened
            events += self._event(
                "response.output_item.added", {"output_index": opened.index, "item": opened.item}
            )
        if delta.arguments_delta:
            opened.pieces.append(delta.arguments_delta)
            events += self._event(
                "response.function_call_arguments.delta",
                {
                    "item_id": opened.item["id"],
                    "output_index": opened.index,
                    "delta": delta.arguments_delta,
                },
            )
        return events

    def finish(self, message: pb.GenerateStreamResponse) -> bytes:
        self._finished = True
        length = message.finish_reason == pb.FINISH_REASON_LENGTH
        self.status = "incomplete" if length else "completed"
        return self._close_all("incomplete" if length else "completed")

    def usage(self, usage: pb.Usage) -> bytes:
        self.tokens = usage_object(usage)
        return b""

    def closing(self) -> bytes:
        if not self._finished:  # an adapter that ended without a finish: what came is whole
            self.status = "completed"
            events = self._close_all("completed")
        else:
            events = b""
        kind = "response.incomplete" if self.status == "incomplete" else "response.completed"
        self.final = self.response()
        return events + self._event(kind, {"response": self.final})

    # -- a whole response ---------------------------------------------------------------------

    def whole(self, response: pb.GenerateResponse) -> bytes:
        choice = (
            response.choices[0]
            if response.choices
            else pb.GeneratedChoice(text=response.text, finish_reason=response.finish_reason)
        )
        length = choice.finish_reason == pb.FINISH_REASON_LENGTH
        self.status = "incomplete" if length else "completed"
        status = "incomplete" if length else "completed"
        if choice.reasoning:
            self.output.append(_reasoning(choice.reasoning, status))
        if choice.text or not choice.tool_calls:
            self.output.append(_message(choice.text, status))
        for call in choice.tool_calls:
            self.output.append(_function_call(call.id, call.name, call.arguments, status))
        self.tokens = usage_object(response.usage)
        self.final = self.response()
        return orjson.dumps(self.final)

    # -- errors (`ErrorDialect`) --------------------------------------------------------------

    def answer(self, error: OpenAIError) -> tuple[int, bytes, Mapping[str, str]]:
        return OPENAI_ERRORS.answer(error)

    def stream_event(self, error: OpenAIError) -> bytes:
        """A stream that fails after its start ends with `response.failed`."""
        self.status = "failed"
        self.error = {"code": _error_code(error), "message": error.message}
        events = self._close_all("incomplete")
        return events + self._event("response.failed", {"response": self.response()})
