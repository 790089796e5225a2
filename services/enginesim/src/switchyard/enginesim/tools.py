"""Tool calling, the same deterministic rule for every simulated engine (the agent-loop rule).

Given a request's function tools and its tool choice, `plan` decides which tools the
simulated model calls: `none` → none (text); a named function → that one; `required` →
call; `auto` → call when the last message is the user's, answer in text otherwise (after a
tool result), so tests can drive an agent loop: call → tool result → final text. Which
tools: those whose names appear in the last user message's text, in the order of `tools`
(none named: the first tool); only the first of those when parallel calls are off.

`calls` writes each call's arguments with the schema-conforming generator, so they always
validate against the tool's `parameters`; the rng comes from the request (`generation.rng`),
so the same seeded request calls the same way. `hermes` is the text a Qwen/Hermes-style
model emits for its calls (vLLM's `hermes` and SGLang's `qwen25` parsers read it back).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from switchyard.enginesim.structured import SchemaWriter
from switchyard.enginesim.tokenizer import TOOL_CALL_END, TOOL_CALL_START


@dataclass(frozen=True, slots=True)
class Tool:
    """A function tool: its name and JSON-schema `parameters` (None: takes no arguments)."""

    name: str
    parameters: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Named:
    """`tool_choice` naming one function."""

    name: str


ToolChoice = Literal["none", "auto", "required"] | Named


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call the model makes: the function's name and its arguments (JSON text)."""

    name: str
    arguments: str


def plan(
    tools: Sequence[Tool],
    choice: ToolChoice,
    *,
    last_role: str,
    user_text: str,
    parallel: bool = True,
) -> tuple[Tool, ...]:
    """The tools the model calls, in order; empty: it answers in text.

    `last_role` is the role of the conversation's last message, `user_text` the text of the
    last user message. A named function absent from `tools` is the engine's error to raise
    first; here it is called all the same.
    """
    if not tools or choice == "none" or (choice == "auto" and last_role != "user"):
        return ()
    if isinstance(choice, Named):
        named = [t for t in tools if t.name == choice.name]
        return (named[0] if named else Tool(choice.name),)
    mentioned = tuple(t for t in tools if t.name in user_text) or (tools[0],)
    return mentioned if parallel else mentioned[:1]


def calls(tools: Sequence[Tool], rng: random.Random) -> tuple[Call, ...]:
    """A call of each tool, with arguments that validate against its `parameters`.

    Raises ConstraintError (a ValueError) for parameters that are not a usable schema.
    """
    return tuple(Call(t.name, arguments(t.parameters, rng)) for t in tools)


def arguments(parameters: Mapping[str, Any] | None, rng: random.Random) -> str:
    """Compact JSON arguments (an object) valid under `parameters`."""
    return _writer(_key(parameters)).write(rng)


def hermes(calls: Sequence[Call]) -> str:
    """The model's text for `calls` in the Hermes/Qwen format: one block per call,
    `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, newline-separated."""
    return "\n".join(
        f'{TOOL_CALL_START}\n{{"name": {json.dumps(c.name)}, "arguments": {c.arguments}}}\n'
        f"{TOOL_CALL_END}"
        for c in calls
    )


def _key(parameters: Mapping[str, Any] | None) -> str:
    """The schema of the arguments, as JSON text (a cache key): an object in every case,
    since arguments are always an object (no parameters: `{}`)."""
    schema: dict[str, Any] = dict(parameters or {})
    if not schema:
        schema = {"type": "object", "properties": {}}
    schema.setdefault("type", "object")
    return json.dumps(schema, sort_keys=True)


@lru_cache(maxsize=128)  # agent loops send the same tools on every turn
def _writer(schema: str) -> SchemaWriter:
    return SchemaWriter(json.loads(schema))
