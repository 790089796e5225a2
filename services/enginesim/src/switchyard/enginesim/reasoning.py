"""Reasoning: the short thinking segment a reasoning model writes before its answer.

A simulator started with its engine's reasoning-parser flag passes `preamble(rng)` to
`generation.generate`, so the model writes `<think>...</think>` first (Qwen3 / DeepSeek-R1
style, `<think>` and `</think>` being whole tokens), counted in the output's tokens. The
engine's parser then keeps it apart from the answer: `split` for a whole output,
`Splitter` for a stream, token by token. Without the flag there is no preamble.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from switchyard.enginesim.tokenizer import THINK_END, THINK_START
from switchyard.enginesim.vocabulary import WORDS

_OPENERS: Final = ("Let me think", "First, check the request", "The question asks")


def thought(rng: random.Random) -> str:
    """A short reasoning text: one or two plain sentences, chosen with `rng`."""
    sentences = [f"{rng.choice(_OPENERS)}."]
    for _ in range(rng.randint(1, 2)):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 9))]
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences)


def preamble(rng: random.Random) -> str:
    """The model's reasoning segment with its markup: `<think>{thought}</think>`. No newlines
    around the thought: parsers (vLLM's, SGLang's) keep whatever is between the tags, so
    the reasoning and the answer come out without stray blank lines."""
    return f"{THINK_START}{thought(rng)}{THINK_END}"


def split(text: str) -> tuple[str, str]:
    """(reasoning, answer) of a whole output, as a `<think>` parser reads it: the text
    between the tags and the text after `</think>`. Without `<think>` first, all of it is
    the answer; without `</think>` (cut short), all of it is reasoning."""
    if not text.startswith(THINK_START):
        return "", text
    body, _, rest = text[len(THINK_START) :].partition(THINK_END)
    return body, rest


@dataclass(slots=True)
class Splitter:
    """A stream's reasoning parser: feed each output token's text, get its (reasoning,
    answer) delta; the tags themselves show as nothing."""

    _state: str = "start"  # start → thinking → answer

    def feed(self, piece: str) -> tuple[str, str]:
        if self._state == "start":
            self._state = "thinking" if piece == THINK_START else "answer"
            if self._state == "thinking":
                return "", ""
        if self._state == "thinking":
            if piece == THINK_END:
                self._state = "answer"
                return "", ""
            return piece, ""
        return "", piece


def split_pieces(pieces: Sequence[str]) -> list[tuple[str, str]]:
    """`Splitter.feed` of each piece, for a whole output."""
    splitter = Splitter()
    return [splitter.feed(p) for p in pieces]
