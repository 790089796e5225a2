"""Prompts as the simulated model sees them: text and its token count.

Tokenising is CPU work proportional to the prompt; long prompts are tokenised on a
worker thread so that the event loop keeps pacing other requests' tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from switchyard.enginesim import tokenizer

T = TypeVar("T")

#: Prompts longer than this (characters or ids) are tokenised off the event loop.
LARGE: Final = 16384


@dataclass(frozen=True, slots=True)
class Prompt:
    text: str
    tokens: int


async def off_loop(heavy: bool, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)`, on a worker thread when the work is `heavy`."""
    if heavy:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


def _from_text(text: str) -> Prompt:
    return Prompt(text, tokenizer.count(text))


def _from_ids(ids: Sequence[int]) -> Prompt:
    return Prompt(tokenizer.decode(ids), len(ids))


def _truncated(text: str, keep: int) -> Prompt:
    return Prompt(tokenizer.decode(tokenizer.encode(text)[:keep]), keep)


async def from_text(text: str) -> Prompt:
    return await off_loop(len(text) > LARGE, _from_text, text)


async def from_ids(ids: Sequence[int]) -> Prompt:
    """The prompt of token ids; ValueError for an id outside the vocabulary."""
    return await off_loop(len(ids) > LARGE, _from_ids, ids)


async def truncated(prompt: Prompt, keep: int) -> Prompt:
    """The first `keep` tokens of `prompt` (SGLang's --allow-auto-truncate)."""
    if keep >= prompt.tokens:
        return prompt
    return await off_loop(len(prompt.text) > LARGE, _truncated, prompt.text, keep)
