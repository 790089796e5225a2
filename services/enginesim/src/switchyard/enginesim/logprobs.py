"""Token logprobs: deterministic values for the tokens a simulated model generates.

Each engine shows them in its own format and enforces its own limit on the number of
alternatives; the values are the same everywhere. For the token at `position` with id
`token_id` (after `previous`), a digest of those three picks the token's probability and
the `top` most likely tokens at that position: distinct tokens, in decreasing order, the
chosen one among them where it ranks, the others ordinary tokens of the simulator's
vocabulary; all probabilities together sum to at most 1 and every logprob is ≤ 0. When
sampling is greedy the chosen token is the most likely (probability at least one half,
every other below it), so it comes first; when sampling, it may rank lower or not at all.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from switchyard.enginesim import tokenizer

#: Alternatives come from the table's ordinary entries (no special or markup token).
_FIRST: Final = len(tokenizer.SPECIAL_TOKENS)
_LAST: Final = tokenizer.CHAR_BASE - len(tokenizer.MARKUP_TOKENS)


@dataclass(frozen=True, slots=True)
class Alternative:
    """A token and its logprob."""

    token_id: int
    token: str
    logprob: float

    @property
    def bytes(self) -> list[int]:
        """The token's UTF-8 bytes (OpenAI's `bytes`)."""
        return list(self.token.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True, slots=True)
class TokenLogprob(Alternative):
    """A generated token, its logprob and the `top` most likely tokens at its position."""

    top: tuple[Alternative, ...] = ()


def token_logprob(
    position: int, token_id: int, top: int, *, greedy: bool, previous: int = -1
) -> TokenLogprob:
    """The logprob of the token `token_id` generated at `position` (after `previous`),
    with the `top` most likely tokens there (at most the vocabulary's ordinary tokens)."""
    digest = hashlib.blake2b(f"{position}\x00{previous}\x00{token_id}".encode(), digest_size=8)
    rng = random.Random(int.from_bytes(digest.digest(), "big"))
    chosen = rng.uniform(0.5, 0.99) if greedy else rng.uniform(0.05, 0.95)
    rest = 1.0 - chosen
    alternatives: list[Alternative] = []
    seen = {token_id}
    for _ in range(min(top, _LAST - _FIRST - 1)):
        tid = rng.randrange(_FIRST, _LAST)
        while tid in seen:  # distinct tokens; the range is large, so this ends fast
            tid = rng.randrange(_FIRST, _LAST)
        seen.add(tid)
        share = rest * rng.uniform(0.3, 0.7)  # each takes part of what is left: decreasing
        rest -= share
        alternatives.append(Alternative(tid, tokenizer.token_text(tid), _log(share)))
    this = Alternative(token_id, tokenizer.token_text(token_id), _log(chosen))
    ranked = sorted((this, *alternatives), key=lambda a: -a.logprob)[:top]
    return TokenLogprob(this.token_id, this.token, this.logprob, tuple(ranked))


def logprobs(token_ids: Sequence[int], top: int, *, greedy: bool) -> tuple[TokenLogprob, ...]:
    """`token_logprob` of each token of an output, in order."""
    return tuple(
        token_logprob(i, tid, top, greedy=greedy, previous=token_ids[i - 1] if i else -1)
        for i, tid in enumerate(token_ids)
    )


def _log(p: float) -> float:
    # Rounded like engines' float32 values read back; never above 0.
    return min(0.0, round(math.log(p), 6))
