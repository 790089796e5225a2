"""The reasoning segment and how a `<think>` parser splits it off, whole and streamed."""

from __future__ import annotations

import random

import pytest

from switchyard.enginesim import tokenizer
from switchyard.enginesim.reasoning import Splitter, preamble, split, split_pieces, thought


def test_preamble_is_thought_in_tags() -> None:
    rng = random.Random(3)
    text = preamble(rng)
    assert text == f"<think>{thought(random.Random(3))}</think>"
    assert text == preamble(random.Random(3))  # deterministic by seed
    pieces = tokenizer.tokens(text)
    assert pieces[0] == tokenizer.THINK_START
    assert pieces[-1] == tokenizer.THINK_END


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>plan it</think>The answer.", ("plan it", "The answer.")),
        ("<think>cut short", ("cut short", "")),
        ("No thinking.", ("", "No thinking.")),
    ],
)
def test_split(text: str, expected: tuple[str, str]) -> None:
    assert split(text) == expected


def test_streamed_split_matches_the_whole_one() -> None:
    text = preamble(random.Random(5)) + "Hello there, world."
    deltas = split_pieces(tokenizer.tokens(text))
    assert ("".join(r for r, _ in deltas), "".join(a for _, a in deltas)) == split(text)
    # The tags themselves show as nothing.
    assert deltas[0] == ("", "")
    assert ("", "") in deltas[1:]


def test_splitter_without_reasoning_passes_text_through() -> None:
    splitter = Splitter()
    assert splitter.feed("Hi") == ("", "Hi")
    assert splitter.feed(tokenizer.THINK_END) == ("", tokenizer.THINK_END)
