"""Strings that fully match a regular expression.

The pattern (checked first by `re.compile`) is parsed into the writer's tree (`nodes`):
literals and escapes, character classes with ranges, negation and `\\d \\w \\s` (and their
negations), `.`, groups of every kind, `|`, and greedy, lazy or possessive quantifiers.
Anchors and inline flags write nothing; lookarounds and backreferences cannot be written
and are refused. Each string is checked with `re.fullmatch`, so an approximation (a flag
that changes what matches) is drawn again, then refused, but never returned.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from typing import Final

from switchyard.enginesim.structured.errors import InvalidConstraint, UnsupportedConstraint
from switchyard.enginesim.structured.nodes import (
    ANY_CHAR,
    CATEGORIES,
    EMPTY,
    CharClass,
    Node,
    Repeat,
    Text,
    alternatives,
    read_class,
    read_escape,
    sequence,
    write,
)

_ATTEMPTS: Final = 8
_QUANTIFIER: Final = re.compile(r"\{(\d*)(,?)(\d*)\}")
_FLAGS: Final = re.compile(r"\(\?[aiLmsux-]*\)")


def compile_regex(pattern: str) -> re.Pattern[str]:
    """The compiled pattern, or InvalidConstraint saying why it does not compile."""
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise InvalidConstraint(f"invalid regular expression {pattern!r}: {exc}") from None


@lru_cache(maxsize=128)  # bounded: clients resend the same patterns (TGI's JSON mode, 7 kB)
def parse_regex(pattern: str) -> Node:
    """The tree of `pattern`: InvalidConstraint if it does not compile, UnsupportedConstraint
    for what cannot be written (lookarounds, backreferences)."""
    compile_regex(pattern)
    try:
        return _Parser(pattern).parse()
    except UnsupportedConstraint as exc:
        raise UnsupportedConstraint(f"{_refusal(pattern)}: {exc}") from None


def _refusal(pattern: str) -> str:
    return f"could not generate a string matching {pattern!r}"


class Regex:
    """A pattern parsed once, then written as many times as needed."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._tree = parse_regex(pattern)
        self._compiled = re.compile(pattern)

    def generate(self, rng: random.Random) -> str:
        """A short string that `re.fullmatch`es the pattern (UnsupportedConstraint if none is found)."""
        for _ in range(_ATTEMPTS):
            text = write(self._tree, rng)
            if self._compiled.fullmatch(text):
                return text
        raise UnsupportedConstraint(_refusal(self.pattern))


def text_from_regex(pattern: str, rng: random.Random) -> str:
    """A short string that `re.fullmatch`es `pattern` (see `Regex`)."""
    return Regex(pattern).generate(rng)


class _Parser:
    """A recursive descent over a pattern `re` has already accepted (so no syntax errors)."""

    def __init__(self, pattern: str) -> None:
        self._p = pattern
        self._i = 0

    def parse(self) -> Node:
        return self._alternatives()

    def _peek(self, text: str) -> bool:
        return self._p.startswith(text, self._i)

    def _alternatives(self) -> Node:
        options = [self._sequence()]
        while self._peek("|"):
            self._i += 1
            options.append(self._sequence())
        return alternatives(options)

    def _sequence(self) -> Node:
        items: list[Node] = []
        while self._i < len(self._p) and self._p[self._i] not in "|)":
            items.append(self._quantified(self._atom()))
        return sequence(items) if items else EMPTY

    def _quantified(self, node: Node) -> Node:
        while self._i < len(self._p):
            c = self._p[self._i]
            if c in "*+?":
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
                self._i += 1
            elif (m := _QUANTIFIER.match(self._p, self._i)) and (m.group(1) or m.group(3)):
                lo = int(m.group(1) or 0)
                hi = int(m.group(3)) if m.group(3) else (None if m.group(2) else lo)
                self._i = m.end()
            else:
                return node
            if self._i < len(self._p) and self._p[self._i] in "?+":  # lazy or possessive
                self._i += 1
            node = Repeat(node, lo, hi)
        return node

    def _atom(self) -> Node:
        c = self._p[self._i]
        self._i += 1
        if c == "(":
            return self._group()
        if c == "[":
            return self._class()
        if c == ".":
            return ANY_CHAR
        if c in "^$":
            return EMPTY
        if c == "\\":
            return self._escape()
        return Text(c)

    def _group(self) -> Node:
        if (m := _FLAGS.match(self._p, self._i - 1)) is not None:  # (?i): flags only
            self._i = m.end()
            return EMPTY
        if self._peek("?#"):
            self._i = self._p.index(")", self._i) + 1
            return EMPTY
        if self._peek("?=") or self._peek("?!") or self._peek("?<=") or self._peek("?<!"):
            raise UnsupportedConstraint("lookarounds cannot be generated")
        if self._peek("?P=") or self._peek("?("):
            raise UnsupportedConstraint("backreferences cannot be generated")
        if self._peek("?P<") or self._peek("?<"):
            self._i = self._p.index(">", self._i) + 1
        elif self._peek("?"):  # (?:...), (?>...), (?i:...)
            self._i = self._p.index(":", self._i) + 1 if not self._peek("?>") else self._i + 2
        inner = self._alternatives()
        self._i += 1  # the closing parenthesis
        return inner

    def _escape(self) -> Node:
        c = self._p[self._i]
        if c.lower() in CATEGORIES:
            self._i += 1
            return CharClass(CATEGORIES[c.lower()], negated=c.isupper())
        if c in "bBAZ":
            self._i += 1
            return EMPTY
        if c.isdigit() and c != "0":
            raise UnsupportedConstraint("backreferences cannot be generated")
        char, self._i = read_escape(self._p, self._i)
        return Text(char)

    def _class(self) -> Node:
        cls, self._i = read_class(self._p, self._i, regex=True)
        return cls
