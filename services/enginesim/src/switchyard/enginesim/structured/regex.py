"""Strings that fully match a regular expression, via rstr's regex inverter."""

from __future__ import annotations

import random
import re
import string
from itertools import chain
from typing import Any, Final

import rstr

from switchyard.enginesim.structured.errors import InvalidConstraint, UnsupportedConstraint

# Readable characters for `.` and negated classes: no control whitespace.
READABLE: Final = string.ascii_letters + string.digits + string.punctuation + " "
_EXTRA_REPEATS: Final = 3
_ATTEMPTS: Final = 8


class _Xeger(rstr.Rstr):
    """rstr, made short and reproducible across processes.

    Upstream lets `*` and `+` repeat up to 100 times, and builds negated classes and
    `\\W` from sets, whose order depends on the per-process string hash seed.
    """

    def __init__(self, rng: random.Random) -> None:
        nonword = sorted(set(string.printable) - set(string.ascii_letters + string.digits + "_"))
        super().__init__(rng, printable=READABLE, whitespace=" ", nonword="".join(nonword))

    def _handle_repeat(self, start_range: int, end_range: int, value: Any) -> str:
        # Our own loop: rstr caps counts at 100, which breaks `x{150}` (start above the cap).
        times = self._random.randint(start_range, min(end_range, start_range + _EXTRA_REPEATS))
        return "".join("".join(self._handle_state(item) for item in value) for _ in range(times))

    def _handle_in(self, value: Any) -> str:
        candidates: list[Any] = list(chain.from_iterable(self._handle_state(i) for i in value))
        if candidates and candidates[0] is False:
            excluded = set(candidates[1:])
            candidates = [c for c in READABLE if c not in excluded]
        if not candidates:
            raise UnsupportedConstraint("a character class matches no readable character")
        chosen: str = self._random.choice(candidates)
        return chosen


def compile_regex(pattern: str) -> re.Pattern[str]:
    """The compiled pattern, or InvalidConstraint saying why it does not compile."""
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise InvalidConstraint(f"invalid regular expression {pattern!r}: {exc}") from None


def text_from_regex(pattern: str, rng: random.Random) -> str:
    """A short string that `re.fullmatch`es `pattern`.

    Raises InvalidConstraint if the pattern does not compile, UnsupportedConstraint if no
    matching string was found (lookarounds, backreferences, contradictory anchors).
    """
    compiled = compile_regex(pattern)
    xeger = _Xeger(rng)
    for _ in range(_ATTEMPTS):
        try:
            text: str = xeger.xeger(pattern)
        except (IndexError, KeyError):  # e.g. a backreference to a group not yet produced
            continue
        if compiled.fullmatch(text):
            return text
    raise UnsupportedConstraint(f"could not generate a string matching {pattern!r}")
