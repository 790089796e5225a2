"""Simulated embeddings: deterministic unit vectors in which shared words mean similarity.

A text's vector is the normalized sum of one fixed pseudo-random vector per word (a token's
text, case and surrounding whitespace ignored), in a space seeded by the model: the same
input always gives the same vector, texts sharing words have a higher cosine similarity than
unrelated ones (a retrieval demo then ranks sensibly), and two models disagree. Shortened
(Matryoshka) vectors are the first `dimensions` components, normalized again, as engines
do. Vectors are float32, the dtype engines return.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from switchyard.enginesim import tokenizer

Vector = npt.NDArray[np.float32]


def _seed(*parts: str) -> int:
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@lru_cache(maxsize=8192)  # bounded: words repeat, and each vector is only `dimensions` floats
def _word_vector(model: str, word: str, dimensions: int) -> Vector:
    vector = np.random.default_rng(_seed(model, word)).standard_normal(dimensions)
    vector.setflags(write=False)
    return vector.astype(np.float32)


def _words(token_ids: Sequence[int]) -> list[str]:
    words = (tokenizer.token_text(t).strip().lower() for t in token_ids)
    return [w for w in words if w]


def embed(model: str, token_ids: Sequence[int], dimensions: int) -> Vector:
    """The unit vector of `dimensions` floats for an input of `token_ids` (not empty).

    Only whitespace (no word at all): the model's own fixed vector for empty text.
    """
    if not token_ids:
        raise ValueError("an embedding needs at least one token")
    total = np.zeros(dimensions, dtype=np.float32)
    for word in _words(token_ids) or [""]:
        total += _word_vector(model, word, dimensions)
    return normalized(total)


def shortened(vector: Vector, dimensions: int) -> Vector:
    """The first `dimensions` components, normalized again (Matryoshka truncation)."""
    return normalized(vector[:dimensions].copy())


def normalized(vector: Vector) -> Vector:
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:  # cannot happen with Gaussian word vectors; keep the result defined
        vector[0] = 1.0
        return vector
    return (vector / norm).astype(np.float32)
