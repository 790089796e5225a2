"""SGLang's chat route beyond plain text (`entrypoints/openai/serving_chat.py`): tools,
reasoning, logprobs, `n` and images, in the order SGLang checks and writes them.

- Checks (`_validate_request`, a 400 `BadRequestError`): a text-only model refuses media
  parts; `tool_choice` "required" or a named function needs tools, and the named one must
  be among them; each tool's `parameters` must be a JSON schema (Draft 2020-12).
- Conversion (a 400 `BadRequest`): history tool calls need JSON-object arguments; a
  required or named call cannot be combined with `response_format`, `regex` or `ebnf`.
- The model (the agent-loop rule of `tools.plan`) thinks first when the server has a
  reasoning parser, and calls tools in its own `<tool_call>` blocks; with no
  `--tool-call-parser`, a required or named call is the JSON array SGLang's schema
  constraint makes it write (`[{"name", "parameters"}]`), and every call stays in the
  text: SGLang parses tool calls only with a parser.
- Output parsing: the reasoning parser splits `<think>...</think>` off into
  `reasoning_content` (unless `separate_reasoning` is false); the tool-call parser turns
  `<tool_call>` blocks into `tool_calls` with ids `call_<24 hex>`, the content being the
  text before the first block, and `finish_reason` "tool_calls" for a natural stop. In a
  stream, a call's first delta has its id, type and name with empty arguments, later
  deltas argument fragments (the closing brackets held back until the call is complete).
- Images (a multimodal model only): each data URL is read (pillow) and counts
  `images.image_tokens` (28-pixel cells, Qwen2-VL's) in the prompt; a broken one is
  SGLang's "Error while loading data" 400, more images than `--limit-mm-data-per-request`
  allows its "Image count N exceeds limit M per request.".
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson
from jsonschema.exceptions import SchemaError
from jsonschema.validators import Draft202012Validator

from switchyard.enginesim import images, tools
from switchyard.enginesim.chat_template import render
from switchyard.enginesim.generation import off_loop
from switchyard.enginesim.reasoning import Splitter, split
from switchyard.enginesim.serving import sse_event
from switchyard.enginesim.sglang.engine import FinishReason, Job, Step, Turn
from switchyard.enginesim.sglang.flags import Config
from switchyard.enginesim.sglang.wire import (
    ChatCompletionRequest,
    ChatMessage,
    Tally,
    ToolChoice,
    head,
    matched_stop,
)
from switchyard.enginesim.tokenizer import IM_END, THINK_END, TOOL_CALL_END, TOOL_CALL_START

MEDIA_PARTS: Final = ("image_url", "video_url", "audio_url")
#: Reasoning parsers whose model thinks unless `enable_thinking` is false (Qwen3's).
TOGGLED: Final = frozenset({"qwen3"})
_CALL_BLOCK: Final = re.compile(
    rf"{re.escape(TOOL_CALL_START)}(.*?){re.escape(TOOL_CALL_END)}", re.DOTALL
)
_NAME: Final = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*')


# --- the request ------------------------------------------------------------------------


async def check(body: ChatCompletionRequest, config: Config) -> str | None:
    """SGLang's `_validate_request` for what the simulator serves (None: fine)."""
    if not body.messages:
        return "Messages cannot be empty."
    if not config.multimodal:
        kinds = (p.type for m in body.messages for p in m.parts() if p.type in MEDIA_PARTS)
        kind = next(kinds, None)
        if kind is not None:
            return f"Model only supports text input; received unsupported content type '{kind}'."
    choice, defined = body.tool_choice, body.tools or []
    if choice == "required" and not defined:
        return "Tools cannot be empty if tool choice is set to required."
    if isinstance(choice, ToolChoice):
        if not defined:
            return "Tools cannot be empty if tool choice is set to a specific tool."
        if not any(t.function.name == choice.function.name for t in defined):
            return f"Tool '{choice.function.name}' not found in tools list."
    if any(t.function.parameters is not None for t in defined):
        # Schemas meet their metaschema off the event loop: their size is the caller's.
        error = await off_loop(True, _schema_error, [t.function.parameters for t in defined])
        if error is not None:
            return error
    max_output = body.max_output
    # SGLang checks max_completion_tokens only when --context-length was given.
    if (
        max_output
        and config.context_length_set
        and not config.allow_auto_truncate
        and max_output > config.context_length
    ):
        return (
            f"max_completion_tokens is too large: {max_output}.This model supports at most "
            f"{config.context_length} completion tokens."
        )
    fmt = body.response_format
    if (
        fmt is not None
        and fmt.type == "json_schema"
        and (fmt.json_schema is None or fmt.json_schema.schema_ is None)
    ):
        return "schema_ is required for json_schema response format request."
    return None


def _schema_error(schemas: Sequence[object]) -> str | None:
    """The first tool whose `parameters` is not a JSON schema, in SGLang's words."""
    for i, schema in enumerate(schemas):
        if schema is None:
            continue
        try:
            Draft202012Validator.check_schema(schema)  # type: ignore[arg-type]
        except SchemaError as exc:
            return f"Tool {i} function has invalid 'parameters' schema: {exc}"
        except RecursionError:
            return (
                f"Tool {i} function 'parameters' schema is too deeply nested or contains a cycle."
            )
    return None


@dataclass(frozen=True, slots=True)
class Conversation:
    """A chat request as the model reads it: the prompt text (one placeholder per image)
    and the images' data URLs, in order."""

    text: str
    image_urls: tuple[str, ...] = ()


def conversation(body: ChatCompletionRequest) -> Conversation:
    """The prompt of a chat request (ValueError: SGLang's conversion refuses it)."""
    urls: list[str] = []
    messages = [_message(m, urls) for m in body.messages]
    if body.continue_final_message and body.messages[-1].role == "assistant":
        # Continue the assistant's turn: no generation prompt, no end-of-turn marker.
        text = render(messages, add_generation_prompt=False, tools=_template_tools(body))
        text = text.removesuffix(f"{IM_END}\n")
    else:
        text = render(messages, tools=_template_tools(body))
    return Conversation(text, tuple(urls))


def _message(message: ChatMessage, urls: list[str]) -> dict[str, Any]:
    """The template's view of a message: its text (an image placeholder per image part,
    a tool result's text parts joined by spaces) and an assistant's calls in Hermes text."""
    if message.role == "tool" and isinstance(message.content, list):
        content = " ".join(p.text or "" for p in message.content if p.type == "text")
    elif isinstance(message.content, list):
        pieces = []
        for part in message.content:
            if part.type == "text":
                pieces.append(part.text or "")
            elif part.type == "image_url" and part.image_url is not None:
                urls.append(part.image_url.url)
                pieces.append(images.PLACEHOLDER)
        content = "".join(pieces)
    else:
        content = message.content or ""
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.role == "assistant" and message.tool_calls:
        calls = [
            tools.Call(c.function.name or "", _arguments(c.function.arguments))
            for c in message.tool_calls
        ]
        out["tool_calls"] = tools.hermes(calls)
    return out


def _arguments(arguments: str | dict[str, Any] | None) -> str:
    """A history call's arguments as JSON text (`normalize_assistant_tool_call_arguments`)."""
    if arguments is None or isinstance(arguments, dict):
        return json.dumps(arguments or {}, ensure_ascii=False)
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        raise ValueError("Assistant tool call function.arguments must be valid JSON.") from None
    if not isinstance(parsed, dict):
        raise ValueError("Assistant tool call function.arguments must be a JSON object.")
    return json.dumps(parsed, ensure_ascii=False)


def _template_tools(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The tools the chat template lists: none for "none", the named one for a named choice."""
    if not body.tools or body.tool_choice == "none":
        return []
    chosen = body.tools
    if isinstance(body.tool_choice, ToolChoice):
        name = body.tool_choice.function.name
        chosen = [t for t in body.tools if t.function.name == name]
    return [t.model_dump(exclude_none=True) for t in chosen]


def check_constraints(body: ChatCompletionRequest, params: dict[str, Any]) -> None:
    """`to_sampling_params`: a forced call's constraint and an output constraint clash."""
    forced = body.tool_choice == "required" or isinstance(body.tool_choice, ToolChoice)
    if forced and body.tools and _constrained(params):
        raise ValueError(
            "tool_choice 'required' or a named tool cannot be combined with "
            "response_format, regex, or ebnf: the tool-call constraint and the "
            "output constraint cannot both be honored."
        )


async def image_tokens(urls: Sequence[str], config: Config) -> int:
    """The tokens of a prompt's images (ValueError: SGLang's refusal, a 400)."""
    limit = (config.limit_mm_data_per_request or {}).get("image")
    if limit is not None and len(urls) > limit:
        raise ValueError(f"Image count {len(urls)} exceeds limit {limit} per request.")
    total = 0
    for url in urls:
        try:
            info = await off_loop(len(url) > images.LARGE_IMAGE, images.inspect_url, url)
        except images.ImageError as exc:
            shown = url if len(url) <= 100 else url[:100] + "..."
            raise ValueError(f"Error while loading data {shown}: {exc}") from None
        total += images.image_tokens(info.width, info.height)
    return total


def thinking(body: ChatCompletionRequest, config: Config) -> bool:
    """Whether the model thinks (`_get_reasoning_from_request`): only with a reasoning
    parser; Qwen3's unless the request turns `enable_thinking` off."""
    if config.reasoning_parser is None:
        return False
    if config.reasoning_parser in TOGGLED:
        return (body.chat_template_kwargs or {}).get("enable_thinking") is not False
    return True


def turn(body: ChatCompletionRequest, config: Config, params: dict[str, Any]) -> Turn:
    """What the model writes: its thinking, and the tools it calls (the agent-loop rule);
    an output constraint keeps an "auto" turn to the constrained text."""
    think, choice = thinking(body, config), body.tool_choice
    planned: tools.ToolChoice = (
        tools.Named(str(choice.function.name)) if isinstance(choice, ToolChoice) else choice
    )
    if not body.tools or (planned == "auto" and _constrained(params)):
        return Turn(think)
    defined = [tools.Tool(t.function.name, _schema(t.function.parameters)) for t in body.tools]
    users = [m for m in body.messages if m.role == "user"]
    calls = tools.plan(
        defined, planned, last_role=body.messages[-1].role,
        user_text=users[-1].text() if users else "", parallel=body.parallel_tool_calls,
    )  # fmt: skip
    # Forced calls without a parser: the JSON array of SGLang's schema constraint.
    json_array = planned != "auto" and config.tool_call_parser is None
    return Turn(think, calls, "json" if json_array else "hermes")


def _schema(parameters: object) -> dict[str, Any] | None:
    return parameters if isinstance(parameters, dict) else None


def _constrained(params: dict[str, Any]) -> bool:
    """Whether sampling params carry an output constraint (a grammar of some kind)."""
    return any(params.get(k) for k in ("regex", "ebnf", "structural_tag", "json_schema"))


def parses_tools(body: ChatCompletionRequest, config: Config) -> bool:
    """`_tool_call_parsing_active`: a parser, tools, and a choice other than "none"."""
    return bool(config.tool_call_parser and body.tools and body.tool_choice != "none")


def separates_reasoning(body: ChatCompletionRequest, config: Config) -> bool:
    return config.reasoning_parser is not None and body.separate_reasoning


# --- the output -------------------------------------------------------------------------


def call_id() -> str:
    """A tool call's id as SGLang makes it for every parser but Kimi's."""
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True, slots=True)
class Parsed:
    """A whole output, parsed: reasoning (None: none), content, and tool calls."""

    reasoning: str | None
    content: str
    calls: tuple[tools.Call, ...] = ()


def parse(text: str, *, reasoning: bool, calls: bool, names: Sequence[str]) -> Parsed:
    """A non-streamed output as SGLang's parsers read it."""
    thought = None
    if reasoning:
        found, text = split(text)
        thought = found or None
    if not calls or TOOL_CALL_START not in text:
        return Parsed(thought, text)
    prefix = text[: text.index(TOOL_CALL_START)].strip()
    parsed = []
    for block in _CALL_BLOCK.findall(text):
        try:
            call = json.loads(block.strip())
        except json.JSONDecodeError:
            continue  # SGLang logs it and skips the block
        name = call.get("name") if isinstance(call, dict) else None
        if isinstance(name, str) and name in names:
            arguments = call.get("parameters") or call.get("arguments", {})
            parsed.append(tools.Call(name, json.dumps(arguments, ensure_ascii=False)))
    return Parsed(thought, prefix, tuple(parsed))


@dataclass(frozen=True, slots=True)
class CallDelta:
    """One tool-call delta of a stream: the first of a call has its id and name."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """What a stream's parsers make of new text: answer text, or a tool-call delta."""

    content: str = ""
    call: CallDelta | None = None


@dataclass(slots=True)
class StreamParser:
    """One choice's reasoning and tool-call parsers in a stream, fed token by token."""

    reasoning: bool
    calls: bool
    stream_reasoning: bool = True
    #: Whether a tool call was seen (a natural stop then finishes as "tool_calls").
    found_calls: bool = False
    _splitter: Splitter = field(default_factory=Splitter)
    _held: str = ""  # reasoning held back without stream_reasoning
    _state: Literal["text", "call", "between"] = "text"
    _body: str = ""
    _count: int = 0
    _name_sent: bool = False
    _sent: int = 0

    def feed(self, pieces: Sequence[str]) -> tuple[str, list[Event]]:
        """(reasoning delta, answer events) of a step's new token texts."""
        thought, events = "", []
        for piece in pieces:
            if self.reasoning:
                if piece == THINK_END and not self.stream_reasoning:
                    thought, self._held = self._held, ""  # the whole reasoning at once
                r, piece = self._splitter.feed(piece)
                if self.stream_reasoning:
                    thought += r
                else:
                    self._held += r
            if piece:
                events.extend(self._answer(piece))
        return thought, _merged(events)

    def flush(self) -> str:
        """Reasoning still held back when the output ends (cut short while thinking)."""
        held, self._held = self._held, ""
        return held

    def _answer(self, piece: str) -> list[Event]:
        if not self.calls or (self._state == "text" and piece != TOOL_CALL_START):
            return [Event(content=piece)]
        if piece == TOOL_CALL_START and self._state != "call":
            self._state, self._body, self._name_sent, self._sent = "call", "", False, 0
            return []
        if self._state == "between":
            return []  # text between and after calls is not content
        if piece == TOOL_CALL_END:
            return self._close()
        self._body += piece
        return self._progress()

    def _progress(self) -> list[Event]:
        head = _NAME.match(self._body)
        if head is None:
            return []
        events = []
        if not self._name_sent:
            self._name_sent = self.found_calls = True
            name = json.loads(head.group(1))
            events.append(Event(call=CallDelta(self._count, "", call_id(), name)))
        # Closing brackets and quotes may end the arguments or only a value: held back.
        stable = self._body[head.end() :].rstrip().rstrip('}]"')
        if len(stable) > self._sent:
            events.append(Event(call=CallDelta(self._count, stable[self._sent :])))
            self._sent = len(stable)
        return events

    def _close(self) -> list[Event]:
        """The call is complete: the rest of its arguments, as SGLang's parser serialises them."""
        events = self._progress()
        self._state = "between"
        head = _NAME.match(self._body)
        if head is None:
            return events
        try:
            arguments = json.dumps(json.loads(self._body)["arguments"], ensure_ascii=False)
        except (json.JSONDecodeError, KeyError, TypeError):
            return events
        sent = self._body[head.end() :][: self._sent]
        if arguments.startswith(sent) and len(arguments) > len(sent):
            events.append(Event(call=CallDelta(self._count, arguments[len(sent) :])))
        self._count += 1
        return events


def _merged(events: list[Event]) -> list[Event]:
    """Consecutive answer pieces as one delta: a step's text comes as one chunk."""
    out: list[Event] = []
    for event in events:
        if out and event.call is None and out[-1].call is None:
            out[-1] = Event(content=out[-1].content + event.content)
        else:
            out.append(event)
    return out


# --- the response -----------------------------------------------------------------------


def _logprobs(step: Step) -> dict[str, Any]:
    """The chat shape of a step's logprobs (`ChoiceLogprobs`): bytes from the token text."""
    return {
        "content": [
            {
                "token": v.token, "bytes": v.bytes, "logprob": v.logprob,
                "top_logprobs": [
                    {"token": a.token, "bytes": a.bytes, "logprob": a.logprob} for a in v.top
                ],
            }
            for v in step.logprobs
        ]
    }  # fmt: skip


def _tool_call(index: int, call: CallDelta) -> dict[str, Any]:
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.id, "index": index, "type": "function", "function": function}


class ChatWriter:
    """The `chat.completion[.chunk]` bodies of one chat request with its `n` samples.

    Chunks are SGLang's: a first one per choice with the role, then reasoning and content
    deltas (`reasoning_content` always present, null when empty; other nulls left out),
    tool-call and tool-parser text deltas in the full pydantic shape (every field, nulls
    included), the logprobs of a step on its first chunk, and every choice's finish in a
    chunk of its own after all of them (a stopped choice that called tools finishes as
    "tool_calls", `matched_stop` kept); each chunk's id is its sample's rid, and the final
    ones take the last sample's. A unary answer's id is its first sample's rid."""

    def __init__(self, jobs: Sequence[Job], body: ChatCompletionRequest, config: Config) -> None:
        self._jobs, self._body, self._config = jobs, body, config
        self._created = int(time.time())
        self._reasoning = separates_reasoning(body, config)
        self._calls = parses_tools(body, config)
        self._names = [t.function.name for t in body.tools or ()]
        self.tally = Tally(len(jobs), config.enable_cache_report)
        self._parsers = [
            StreamParser(self._reasoning, self._calls, body.stream_reasoning) for _ in jobs
        ]
        self._finishes: dict[int, FinishReason] = {}

    # unary
    def response(self, steps: Sequence[Step]) -> dict[str, Any]:
        choices = []
        for index, (job, step) in enumerate(zip(self._jobs, steps, strict=True)):
            self.tally.add(index, job, step)
            choices.append(self._choice(index, step))
        return {
            **head(self._jobs[0].rid, self._created, self._body.model, "chat.completion"),
            "choices": choices, "usage": self.tally.total(),
            "metadata": {"weight_version": "default"},
        }  # fmt: skip

    def _choice(self, index: int, step: Step) -> dict[str, Any]:
        parsed = parse(step.text, reasoning=self._reasoning, calls=self._calls, names=self._names)
        finish = dict(step.finish_reason) if step.finish_reason is not None else None
        message: dict[str, Any] = {
            "role": "assistant", "content": parsed.content, "reasoning_content": parsed.reasoning,
        }  # fmt: skip
        if parsed.calls:
            message["tool_calls"] = [
                _tool_call(i, CallDelta(i, c.arguments, call_id(), c.name))
                for i, c in enumerate(parsed.calls)
            ]
            if finish is not None and finish["type"] == "stop":
                finish |= {"type": "tool_calls", "matched": None}
        return {
            "index": index, "message": message,
            "logprobs": _logprobs(step) if self._body.logprobs else None,
            "finish_reason": str(finish["type"]) if finish is not None else None,
            "matched_stop": matched_stop(finish),
        }  # fmt: skip

    # stream
    def _sse(self, rid: str, choice: dict[str, Any], usage: dict[str, Any] | None) -> bytes:
        body = {**head(rid, self._created, self._body.model, "chat.completion.chunk")}
        body["choices"] = [choice]
        return sse_event(orjson.dumps(body | ({"usage": usage} if usage is not None else {})))

    def _delta(
        self, index: int, rid: str, delta: dict[str, Any], *, logprobs: Any = None,
        usage: dict[str, Any] | None = None, finish: str | None = None, matched: Any = None,
    ) -> bytes:  # fmt: skip
        """`build_sse_content`: nulls left out of the delta, but `reasoning_content`."""
        choice = {
            "index": index, "delta": {"reasoning_content": None, **delta}, "logprobs": logprobs,
            "finish_reason": finish, "matched_stop": matched,
        }  # fmt: skip
        return self._sse(rid, choice, usage)

    def _full(self, index: int, rid: str, usage: dict[str, Any] | None, **delta: Any) -> bytes:
        """A tool-parser chunk (`ChatCompletionStreamResponse`): every field, nulls too."""
        full = {"role": None, "content": None, "reasoning_content": None, **delta}
        choice = {
            "index": index, "delta": full, "logprobs": None, "finish_reason": None,
            "matched_stop": None,
        }  # fmt: skip
        body = {**head(rid, self._created, self._body.model, "chat.completion.chunk")}
        return sse_event(orjson.dumps(body | {"choices": [choice], "usage": usage}))

    def chunks(self, index: int, step: Step, continuous: bool) -> list[bytes]:
        """The chunks of one step of choice `index` (its finish is kept for `finish_chunks`)."""
        job = self._jobs[index]
        rid = job.rid
        self.tally.add(index, job, step)
        out = []
        if step.finish_reason is not None:
            self._finishes[index] = step.finish_reason
        if step.first:
            out.append(self._delta(index, rid, {"role": "assistant", "content": ""}))
        usage = self.tally.current(index) if continuous else None
        logprobs = _logprobs(step) if self._body.logprobs and step.logprobs else None
        parser = self._parsers[index]
        thought, events = parser.feed(step.pieces)
        if step.finish_reason is not None and step.finish_reason.get("type") != "abort":
            thought += parser.flush()
        if thought:
            out.append(
                self._delta(
                    index, rid, {"reasoning_content": thought}, logprobs=logprobs, usage=usage
                )
            )
            logprobs = None
        for event in events:
            if not self._calls:
                out.append(
                    self._delta(
                        index, rid, {"content": event.content}, logprobs=logprobs, usage=usage
                    )
                )
                logprobs = None
            elif event.call is None:
                out.append(self._full(index, rid, usage, content=event.content))
            else:
                out.append(
                    self._full(
                        index, rid, usage, tool_calls=[_tool_call(event.call.index, event.call)]
                    )
                )
        if logprobs is not None and (
            self._config.reasoning_parser or self._config.tool_call_parser
        ):
            out.append(self._delta(index, rid, {}, logprobs=logprobs, usage=usage))
        return out

    def finish_chunks(self, rid: str) -> list[bytes]:
        """Each finished choice's last chunk, in the order they finished."""
        out = []
        for index, finish in self._finishes.items():
            kind = str(finish["type"])
            if kind == "stop" and self._parsers[index].found_calls:
                kind = "tool_calls"
            out.append(self._delta(index, rid, {}, finish=kind, matched=finish.get("matched")))
        return out

    def usage_chunk(self, rid: str) -> bytes:
        body = {**head(rid, self._created, self._body.model, "chat.completion.chunk")}
        return sse_event(orjson.dumps(body | {"choices": [], "usage": self.tally.total()}))
