"""Strings generated from a regex match it in full, stay short, and are reproducible."""

from __future__ import annotations

import random
import re

import pytest

from switchyard.enginesim.structured import (
    InvalidConstraint,
    UnsupportedConstraint,
    text_from_regex,
)

PATTERNS = [
    r"\d{3}-\d{4}",
    r"[A-Z][a-z]+ [A-Z][a-z]+",
    r"(yes|no|maybe)",
    r"[^aeiou\s]{5}",
    r"\w+@\w+\.(com|org)",
    r"\W\S\s",
    r"(?i)hello",
    r"[\u4e00-\u9fff]{2}",
    r"^\(\d{3}\) \d{3}$",
    r"(ab)+c*d?",
    r"[0-9a-f]{8}-[0-9a-f]{4}",
    r".{2,5}",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_output_fully_matches(pattern: str) -> None:
    for seed in range(20):
        text = text_from_regex(pattern, random.Random(seed))
        assert re.fullmatch(pattern, text), (pattern, text)


def test_unbounded_repetition_stays_short() -> None:
    for seed in range(20):
        assert len(text_from_regex(r"a*b+", random.Random(seed))) <= 7


def test_same_seed_same_string() -> None:
    assert text_from_regex(r"[^x]{6}\W", random.Random(4)) == text_from_regex(
        r"[^x]{6}\W", random.Random(4)
    )


def test_a_pattern_that_does_not_compile_is_invalid() -> None:
    with pytest.raises(InvalidConstraint, match="invalid regular expression"):
        text_from_regex(r"(unclosed", random.Random(0))


def test_a_pattern_with_no_generable_match_is_unsupported() -> None:
    with pytest.raises(UnsupportedConstraint, match="could not generate"):
        text_from_regex(r"a(?=b)", random.Random(0))


def test_large_repeat_counts_are_written_in_full() -> None:
    text = text_from_regex(r"a{150}b{2,4}", random.Random(1))
    assert re.fullmatch(r"a{150}b{2,4}", text)
