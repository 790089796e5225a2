"""TGI's stopping rules, applied to a completion the simulator core decided.

`StoppingCriteria` in `server/text_generation_server/utils/tokens.py` checks, after each
token and in this order: the token budget (`length`, even when that token is EOS), the
EOS token (`eos_token`), then each stop sequence as an end-anchored match on the output
so far (`stop_sequence`). A stop string therefore ends the output only when a token
completes it, and it stays in `generated_text`; one hidden inside a token goes unseen.
The core generates with no stop strings (its rules are vLLM's), and this module cuts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from switchyard.enginesim import tokenizer
from switchyard.enginesim.generation import Generation

FinishReason = Literal["length", "eos_token", "stop_sequence"]


@dataclass(frozen=True, slots=True)
class OutToken:
    """One generated token as TGI reports it."""

    id: int
    text: str
    logprob: float
    special: bool

    def json(self) -> dict[str, object]:
        return {"id": self.id, "text": self.text, "logprob": self.logprob, "special": self.special}


@dataclass(frozen=True, slots=True)
class Decoded:
    """The tokens TGI emits for a request and why it stopped."""

    tokens: tuple[OutToken, ...]  # every generated token, EOS included
    text: str  # `generated_text`: the tokens' text without special tokens
    finish_reason: FinishReason

    @property
    def generated_tokens(self) -> int:
        return len(self.tokens)


def logprob(token_id: int, position: int, seed: int) -> float:
    """A made-up but stable log-probability for a generated token."""
    mixed = (token_id * 2654435761 + position * 40503 + seed) & 0xFFFF
    return -round(mixed / 0xFFFF * 2.5, 4)


def apply_stopping(
    generation: Generation, max_new_tokens: int, stop: Sequence[str], seed: int
) -> Decoded:
    """Cut `generation` (made without stop strings) where TGI's criteria stop it."""
    pieces = list(zip(generation.token_ids, generation.tokens, strict=True))
    if generation.eos:
        pieces.append((tokenizer.EOS_TOKEN_ID, tokenizer.EOS_TOKEN))
    out: list[OutToken] = []
    text: list[str] = []
    so_far = ""
    reason: FinishReason = "length"
    for position, (tid, piece) in enumerate(pieces):
        special = tokenizer.is_special(tid)
        out.append(OutToken(tid, piece, logprob(tid, position, seed), special))
        if not special:
            text.append(piece)
            so_far = (so_far + piece)[-300:]  # TGI keeps only the output's tail too
        if position + 1 >= max_new_tokens:
            reason = "length"
            break
        if special and tid == tokenizer.EOS_TOKEN_ID:
            reason = "eos_token"
            break
        if any(so_far.endswith(s) for s in stop if s):
            reason = "stop_sequence"
            break
    return Decoded(tuple(out), "".join(text), reason)
