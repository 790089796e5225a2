"""The simulated embedding vectors every simulator serves."""

from __future__ import annotations

import numpy as np
import pytest

from switchyard.enginesim import tokenizer
from switchyard.enginesim.embedding import Vector, embed, shortened

MODEL = "org/embedder"


def vector(text: str, dimensions: int = 384, model: str = MODEL) -> Vector:
    return embed(model, tokenizer.encode(text), dimensions)


def cosine(a: Vector, b: Vector) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_the_same_input_gives_the_same_float32_unit_vector() -> None:
    first, again = vector("The cat sat on the mat"), vector("The cat sat on the mat")
    assert first.dtype == np.float32
    assert first.shape == (384,)
    assert first.tobytes() == again.tobytes()
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-6)


def test_shared_words_are_closer_than_unrelated_ones() -> None:
    query = vector("how do I bake sourdough bread")
    related = vector("a recipe to bake bread with sourdough starter")
    unrelated = vector("the stock market fell sharply on monday")
    assert cosine(query, related) > cosine(query, unrelated) + 0.2


def test_case_and_spacing_do_not_change_a_word() -> None:
    assert cosine(vector("Hello World"), vector("hello   world")) == pytest.approx(1.0, abs=1e-6)


def test_models_and_sizes_disagree() -> None:
    text = "the same words"
    assert cosine(vector(text), vector(text, model="org/other")) < 0.5
    assert vector(text, dimensions=16).shape == (16,)


def test_whitespace_only_is_a_fixed_vector_and_nothing_is_refused() -> None:
    spaces = vector("   ")
    assert np.linalg.norm(spaces) == pytest.approx(1.0, abs=1e-6)
    assert spaces.tobytes() == vector("\n\n").tobytes()
    with pytest.raises(ValueError, match="at least one token"):
        embed(MODEL, [], 8)


def test_shortened_is_a_unit_prefix_of_the_direction() -> None:
    full = vector("matryoshka dolls nest inside each other")
    short = shortened(full, 64)
    assert short.dtype == np.float32
    assert short.shape == (64,)
    assert np.linalg.norm(short) == pytest.approx(1.0, abs=1e-6)
    # The same direction as the first 64 components: only the length changed.
    assert cosine(short, full[:64]) == pytest.approx(1.0, abs=1e-6)
    assert full.shape == (384,)  # the full vector is left as it was
    assert np.linalg.norm(full) == pytest.approx(1.0, abs=1e-6)
