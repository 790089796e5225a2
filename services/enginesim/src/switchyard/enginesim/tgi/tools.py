"""TGI's tool calling (`router/src/infer/tool_grammar.rs`, `chat.rs`, `lib.rs`).

TGI has no tool-call parser: it constrains the output with a JSON grammar and reads the
JSON back. `select` is `ToolGrammar::apply`: the tools the grammar offers for a
`tool_choice` — `none` none (plain chat), a named function that one ("Tool with name X not
found" otherwise), `required` all of them, `auto` (the default, also for `null`) all of
them plus `no_tool`, an argument-less function whose choice makes TGI generate again
without tools and answer in text. Each function's grammar keeps only the `properties` and
`required` of its parameters, adds the `_name` key, and allows no other key (unless
`additionalProperties` is the *string* "true"). The model writes one call:
`{"function": {"_name": "<name>", <arguments>}}` — never several (no parallel calls).

The simulated model picks with the core's agent-loop rule (`enginesim.tools.plan`, without
parallel calls): under `auto` a rule that answers in text picks `no_tool`.

Answers (`parse_output`, `ChatState`): a unary call is `{"id": "0", "type": "function",
"function": {"description": null, "name", "arguments": "<compact JSON>"}}` (the id is
always "0") with the finish reason of the generation ("stop" for EOS). A stream buffers
tokens until the JSON names the function, then sends `tool_calls` deltas: the first with
the name and `arguments: "{"` in place of its token, the others with `name: null` and each
token's text, the last one's closing brace cut; every delta has the request's id (the
next integer after the ids of the conversation's calls, or a UUID when one is not an
integer); tokens after the JSON send nothing, so no chunk carries a finish reason.

The toy vocabulary cuts JSON into one token per punctuation mark; a real model's BPE has
`",` as one token, and TGI's stream parser relies on it (a name's closing quote arriving
alone would leave `{,` at the start of the arguments). So the simulated model writes a
string's closing quote and the comma after it as one token (`merge_quote_comma`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from switchyard.enginesim import tokenizer
from switchyard.enginesim import tools as core
from switchyard.enginesim.generation import Generation
from switchyard.enginesim.tgi.errors import InferError

NO_TOOL: Final = "no_tool"
DEFAULT_TOOL_PROMPT: Final = (
    "\nGiven the functions available, please respond with a JSON for a function call with "
    "its proper arguments that best answers the given prompt. Respond in the format "
    "{name: function name, parameters: dictionary of argument name and its value}.Do not "
    "use variables.\n"
)
_QUOTE_ID: Final = tokenizer.token_id('"')


def compact(value: Any) -> str:
    """`serde_json::to_string`: no spaces, UTF-8 kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class FunctionDef:
    """`FunctionDefinition`: `arguments` (alias `parameters`) is any JSON value."""

    name: str
    arguments: Any
    description: str | None = None

    def json(self) -> dict[str, Any]:
        # `arguments` is serialized as a string of JSON (`serialize_as_string`).
        return {
            "description": self.description,
            "name": self.name,
            "arguments": compact(self.arguments),
        }


@dataclass(frozen=True, slots=True)
class ToolDef:
    """`Tool`: any `type` is read, only functions exist."""

    type: str
    function: FunctionDef

    def json(self) -> dict[str, Any]:
        return {"type": self.type, "function": self.function.json()}


_NO_TOOL_DEF: Final = ToolDef(
    "function",
    FunctionDef(NO_TOOL, {"type": "object"}, "Open ended response with no specific tool selected"),
)

#: `ToolChoice`: "auto", "none", "required", or a function's name.
Choice = Literal["auto", "none", "required"] | core.Named


def select(tools: Sequence[ToolDef], choice: Choice) -> tuple[ToolDef, ...]:
    """The tools the grammar offers (`ToolGrammar::apply`); empty: no grammar at all."""
    if isinstance(choice, core.Named):
        for tool in tools:
            if tool.function.name == choice.name:
                return (tool,)
        raise InferError("tool_error", f"Tool with name {choice.name} not found")
    if choice == "required":
        return tuple(tools)
    if choice == "auto":
        return (*tools, _NO_TOOL_DEF)
    return ()


def grammar_schema(tool: ToolDef) -> dict[str, Any]:
    """The arguments' schema in the grammar: the parameters' `properties` and `required`
    only, nothing else allowed (`_name` aside, written by `call_text`)."""
    args = tool.function.arguments
    schema: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    if isinstance(args, dict):
        if isinstance(args.get("properties"), dict):
            schema["properties"] = dict(args["properties"])
        if isinstance(args.get("required"), list):
            schema["required"] = [r for r in args["required"] if r in schema["properties"]]
        schema["additionalProperties"] = args.get("additionalProperties") == "true"
    return schema


def pick(offered: Sequence[ToolDef], choice: Choice, *, last_role: str, user_text: str) -> ToolDef:
    """The one function the simulated model writes among `offered` (non-empty): the agent
    loop's first pick, or `no_tool` where the rule answers in text."""
    real = [t for t in offered if t is not _NO_TOOL_DEF]
    candidates = [core.Tool(t.function.name) for t in real]
    planned = core.plan(
        candidates, choice, last_role=last_role, user_text=user_text, parallel=False
    )
    if not planned:
        return _NO_TOOL_DEF
    return next(t for t in real if t.function.name == planned[0].name)


def call_text(tool: ToolDef, arguments: str) -> str:
    """The model's output for a call: `{"function": {"_name": ..., <arguments>}}`."""
    fields = {"_name": tool.function.name, **json.loads(arguments)}
    return json.dumps({"function": fields}, ensure_ascii=False)


def merge_quote_comma(generation: Generation) -> Generation:
    """`generation` with each `"` token followed by a `,` token written as one `",` token
    (a real vocabulary's merge; the token keeps the id of `"`)."""
    tokens: list[str] = []
    ids: list[int] = []
    for piece, tid in zip(generation.tokens, generation.token_ids, strict=True):
        if piece == "," and tokens and tokens[-1] == '"':
            tokens[-1] = '",'
            continue
        tokens.append(piece)
        ids.append(tid if piece != '"' else _QUOTE_ID)
    merged = len(generation.tokens) - len(tokens)
    return replace(
        generation,
        tokens=tuple(tokens),
        token_ids=tuple(ids),
        completion_tokens=generation.completion_tokens - merged,
    )


def _call(text: str) -> tuple[str, dict[str, Any]] | None:
    """`Call` as serde reads it: `{"function": {"_name": <string>, ...}}`, or None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    function = value.get("function") if isinstance(value, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("_name"), str):
        return None
    arguments = {k: v for k, v in function.items() if k != "_name"}
    return function["_name"], arguments


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: str  # compact JSON of the arguments object


def parse_output(generated_text: str) -> ParsedCall | None:
    """`chat::parse_output`: the call the text makes, None for `no_tool`."""
    call = _call(generated_text)
    if call is None:
        try:
            json.loads(generated_text)
            problem = "missing field `function` or `_name`"
        except ValueError as exc:
            problem = str(exc)
        raise InferError(
            "tool_error",
            f"Failed to parse generated text: {problem} {json.dumps(generated_text)}",
        )
    name, arguments = call
    return None if name == NO_TOOL else ParsedCall(name, compact(arguments))


def tool_call_json(call: ParsedCall) -> dict[str, Any]:
    """A unary answer's `ToolCall` (the id is always "0")."""
    function = {"description": None, "name": call.name, "arguments": call.arguments}
    return {"id": "0", "type": "function", "function": function}


def next_tool_call_id(call_ids: Sequence[str]) -> str:
    """`ChatRequest::next_tool_call_id`: one past the largest integer id, or a UUID."""
    next_id = 0
    for call_id in call_ids:
        if not call_id.isascii() or not call_id.isdigit():
            return str(uuid.uuid4())
        next_id = max(next_id, int(call_id) + 1)
    return str(next_id)


@dataclass(frozen=True, slots=True)
class ToolDelta:
    """A `tool_calls` delta to send: `name` on the first one only."""

    arguments: str
    name: str | None = None


StreamEvent = Literal["content", "none"] | ToolDelta


@dataclass(slots=True)
class ChatState:
    """`chat::ChatState`: what each streamed token becomes.

    `push` returns "content" (send the token as content), "none" (send nothing), a
    `ToolDelta`, or NO_TOOL (the model chose `no_tool`: generate again without tools).
    """

    using_tools: bool
    state: Literal["buffering", "tool", "content"] = field(init=False)
    text: str = ""
    #: The model named `no_tool`: TGI drops this generation and generates again.
    chose_no_tool: bool = False

    def __post_init__(self) -> None:
        self.state = "buffering" if self.using_tools else "content"

    def push(self, token_text: str, special: bool) -> StreamEvent | Literal["no_tool"]:
        if self.state == "content":
            return "content"
        self.text += token_text
        if self.state == "buffering":
            call = _call(_trim_partial(self.text) + "}}")
            if call is None:
                return "none"
            if call[0] == NO_TOOL:
                self.chose_no_tool = True
                return NO_TOOL
            self.state = "tool"
            return ToolDelta("{", call[0])
        complete = _call(self.text) is not None
        if complete:
            self.state = "buffering"
        if special:  # no text: an empty content delta, as outside tools
            return "content"
        if complete:  # cut the JSON's closing brace
            text = token_text.rstrip()
            return ToolDelta(text[:-1] if text.endswith("}") else text)
        return ToolDelta(token_text)


def _trim_partial(text: str) -> str:
    end = len(text)
    while end and (text[end - 1].isspace() or text[end - 1] in ",}"):
        end -= 1
    return text[:end]
