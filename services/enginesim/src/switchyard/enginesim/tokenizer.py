"""A deterministic, lossless toy tokenizer.

Text is cut into words with their leading whitespace, single punctuation marks and
whitespace runs (`"".join(tokens(t)) == t` for every string). A piece found in a fixed
table is one token; any other piece is split greedily into the longest table entries,
down to single characters. Ids are positions in the table, or `CHAR_BASE + ord(char)` for
characters outside it, so every id decodes exactly and ids are the same in every process.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from functools import lru_cache
from typing import Final

from switchyard.enginesim.vocabulary import WORDS

UNK_TOKEN: Final = "<unk>"
BOS_TOKEN: Final = "<s>"
EOS_TOKEN: Final = "</s>"
IM_START: Final = "<|im_start|>"
IM_END: Final = "<|im_end|>"
SPECIAL_TOKENS: Final[tuple[str, ...]] = (UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, IM_START, IM_END)
THINK_START: Final = "<think>"
THINK_END: Final = "</think>"
TOOL_CALL_START: Final = "<tool_call>"
TOOL_CALL_END: Final = "</tool_call>"
MARKUP_TOKENS: Final[tuple[str, ...]] = (THINK_START, THINK_END, TOOL_CALL_START, TOOL_CALL_END)
"""Whole tokens that are not special (output keeps them), as Qwen-style models add them
for reasoning and tool calls; last in the table, so that no earlier id moved."""
BOS_TOKEN_ID: Final = 1
EOS_TOKEN_ID: Final = 2


def _table() -> tuple[str, ...]:
    ascii_chars = [chr(c) for c in range(32, 127)] + ["\n", "\t"]
    whitespace = ["  ", "    ", "\n\n"]
    spaced = [" " + c for c in string.ascii_letters + string.digits]
    bigrams = [a + b for a in string.ascii_lowercase for b in string.ascii_lowercase]
    words = [form for w in WORDS for form in (w, " " + w, w.capitalize(), " " + w.capitalize())]
    # dict.fromkeys: first occurrence wins, order (hence ids) stays fixed.
    return tuple(
        dict.fromkeys(
            [*SPECIAL_TOKENS, *ascii_chars, *whitespace, *spaced, *bigrams, *words, *MARKUP_TOKENS]
        )
    )


_TABLE: Final = _table()
_IDS: Final = {piece: i for i, piece in enumerate(_TABLE)}
_LONGEST: Final = max(len(p) for p in _TABLE)

CHAR_BASE: Final = len(_TABLE)
"""Ids from here on are single characters: `CHAR_BASE + ord(char)`."""
VOCAB_SIZE: Final = CHAR_BASE + 0x110000

_WHOLE = sorted((*SPECIAL_TOKENS, *MARKUP_TOKENS), key=len, reverse=True)
_SPECIALS_RE = "|".join(re.escape(s) for s in _WHOLE)
# Whitespace before a special token stays its own piece so the special is recognised.
_PIECE = re.compile(rf"{_SPECIALS_RE}|\s+(?={_SPECIALS_RE})|\s*\w+|\s*[^\w\s]|\s+")


_CACHED_PIECE: Final = 64  # longer pieces are rare; caching them would only cost memory


def _split(piece: str) -> tuple[str, ...]:
    return _split_cached(piece) if len(piece) <= _CACHED_PIECE else _split_greedy(piece)


@lru_cache(maxsize=65536)  # bounded: prompts repeat the same out-of-table words
def _split_cached(piece: str) -> tuple[str, ...]:
    return _split_greedy(piece)


def _split_greedy(piece: str) -> tuple[str, ...]:
    """`piece` as the longest table entries, left to right, down to single characters."""
    if piece in _IDS:
        return (piece,)
    out: list[str] = []
    i, n = 0, len(piece)
    while i < n:
        for j in range(min(n, i + _LONGEST), i, -1):
            if piece[i:j] in _IDS:
                break
        else:
            j = i + 1  # a character outside the table: its own token
        out.append(piece[i:j])
        i = j
    return tuple(out)


def tokens(text: str) -> list[str]:
    """The token strings of `text`; they join back to exactly `text`."""
    return [tok for m in _PIECE.finditer(text) for tok in _split(m.group())]


def token_id(token: str) -> int:
    """The id of one token string (as returned by `tokens`)."""
    tid = _IDS.get(token)
    if tid is not None:
        return tid
    if len(token) == 1:
        return CHAR_BASE + ord(token)
    raise ValueError(f"{token!r} is not a single token")


def token_text(tid: int) -> str:
    """The text of one token id."""
    if 0 <= tid < CHAR_BASE:
        return _TABLE[tid]
    if CHAR_BASE <= tid < VOCAB_SIZE:
        return chr(tid - CHAR_BASE)
    raise ValueError(f"token id {tid} is out of range [0, {VOCAB_SIZE})")


def is_special(tid: int) -> bool:
    """Whether the id is a special token (`<s>`, `</s>`, chat markers...)."""
    return 0 <= tid < len(SPECIAL_TOKENS)


def encode(text: str) -> list[int]:
    """Token ids of `text` (no BOS is added)."""
    return [token_id(t) for t in tokens(text)]


def decode(ids: Iterable[int], *, skip_special: bool = False) -> str:
    """The text of `ids`; `skip_special` drops special tokens, as engines do for output."""
    return "".join(token_text(i) for i in ids if not (skip_special and is_special(i)))


def count(text: str) -> int:
    """How many tokens `text` is."""
    return sum(len(_split(m.group())) for m in _PIECE.finditer(text))
