"""The simulated model's chat template: ChatML, as Qwen and many fine-tunes use it.

With tools, a system block lists them first (Qwen2.5's `# Tools` block, each tool's JSON
in `<tools>`), so their definitions count in the prompt's tokens as they do for a real
model; an assistant message's tool calls are written back in the Hermes format the model
emits (`tools.hermes`), and tool results are `tool` messages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from switchyard.enginesim.tokenizer import IM_END, IM_START

ROLES: Final = frozenset({"system", "user", "assistant", "tool"})


def render(
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The prompt text for `messages` (each with a `role`, a string `content` and, for an
    assistant, optionally `tool_calls`: the Hermes text of its calls, see `tools.hermes`);
    `tools`: the request's tool definitions as JSON objects.

    Raises ValueError for an empty list, a missing or unknown role, or non-string content.
    """
    if not messages:
        raise ValueError("messages must contain at least one message")
    parts: list[str] = []
    if tools:
        listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        parts.append(f"{IM_START}system\n# Tools\n<tools>\n{listed}\n</tools>{IM_END}\n")
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            valid = ", ".join(sorted(ROLES))
            raise ValueError(f"messages[{i}]: unknown role {role!r} (expected one of {valid})")
        content = message.get("content")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}]: content must be a string")
        calls = message.get("tool_calls") or ""
        if calls:
            content = f"{content}\n{calls}" if content else str(calls)
        parts.append(f"{IM_START}{role}\n{content}{IM_END}\n")
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)
