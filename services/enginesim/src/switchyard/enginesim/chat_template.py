"""The simulated model's chat template: ChatML, as Qwen and many fine-tunes use it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from switchyard.enginesim.tokenizer import IM_END, IM_START

ROLES: Final = frozenset({"system", "user", "assistant", "tool"})


def render(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
    """The prompt text for `messages` (each with a `role` and a string `content`).

    Raises ValueError for an empty list, a missing or unknown role, or non-string content.
    """
    if not messages:
        raise ValueError("messages must contain at least one message")
    parts: list[str] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            valid = ", ".join(sorted(ROLES))
            raise ValueError(f"messages[{i}]: unknown role {role!r} (expected one of {valid})")
        content = message.get("content")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}]: content must be a string")
        parts.append(f"{IM_START}{role}\n{content}{IM_END}\n")
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)
