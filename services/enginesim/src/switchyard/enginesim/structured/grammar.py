"""Sentences of an EBNF grammar: the GBNF / xgrammar dialect, and Lark's `name: ...` rules.

Supported: rules `name ::= alternatives` (or `name: alternatives`), spanning lines; string
literals in double quotes with escapes; character classes `[a-z0-9_]`, `[^"\\\\]`; `.`;
grouping; `|`; `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`; rule references; `#` comments; Lark
`/regex/flags` terminals. The start rule is `root`, else `start`, else the first rule.

The grammar is parsed into the tree `nodes` writes (Lark's regex terminals too, by `regex`).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Final

from switchyard.enginesim.structured.errors import InvalidConstraint
from switchyard.enginesim.structured.nodes import (
    ANY_CHAR,
    Alt,
    CharClass,
    Node,
    Ref,
    Repeat,
    Seq,
    Text,
    alternatives,
    height,
    read_class,
    read_escape,
    sequence,
    write,
)
from switchyard.enginesim.structured.regex import parse_regex

_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_REPEAT: Final = re.compile(r"\{\s*(\d*)\s*(,?)\s*(\d*)\s*\}")
_SINGLE: Final = frozenset("()|*+?.")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # ident, define, string, class, regex, repeat, or the character itself
    value: object
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class Grammar:
    """A parsed grammar; `generate` writes one sentence of it."""

    rules: dict[str, Node]
    start: str
    heights: dict[str, float]  # shortest derivation depth per rule; inf: none

    def generate(self, rng: random.Random) -> str:
        """One sentence of the language, chosen with `rng`."""
        return write(Ref(self.start), rng, self.rules, self.heights)


def parse_grammar(text: str) -> Grammar:
    """The grammar in `text`; InvalidConstraint says where and why it does not parse."""
    rules = _Parser(_lex(text)).rules()
    if not rules:
        raise InvalidConstraint("the grammar defines no rules")
    for name, body in rules.items():
        for ref in _refs(body):
            if ref not in rules:
                raise InvalidConstraint(f"rule {name!r} refers to undefined rule {ref!r}")
    start = next((s for s in ("root", "start") if s in rules), next(iter(rules)))
    heights = _heights(rules)
    if math.isinf(heights[start]):
        raise InvalidConstraint(f"start rule {start!r} never ends: every alternative recurses")
    return Grammar(rules, start, heights)


def text_from_grammar(ebnf: str, rng: random.Random) -> str:
    """A sentence of the grammar `ebnf` (see the module's docstring for the dialect)."""
    return parse_grammar(ebnf).generate(rng)


def _lex(text: str) -> list[_Token]:
    out: list[_Token] = []
    i, line, line_start = 0, 1, 0
    while i < len(text):
        c = text[i]
        col = i - line_start + 1
        if c == "\n":
            line, line_start = line + 1, i + 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif text.startswith("::=", i):
            out.append(_Token("define", "::=", line, col))
            i += 3
        elif c == ":":
            out.append(_Token("define", ":", line, col))
            i += 1
        elif c == '"':
            value, i = _quoted(text, i + 1, '"', line, col)
            out.append(_Token("string", value, line, col))
        elif c == "/":
            value, i = _quoted(text, i + 1, "/", line, col, keep_escapes=True)
            flags = re.match(r"[imsx]*", text[i:])
            assert flags is not None
            i += flags.end()
            prefix = f"(?{flags.group()})" if flags.group() else ""
            out.append(_Token("regex", prefix + value, line, col))
        elif c == "[":
            try:
                chars, i = read_class(text, i + 1)
            except ValueError as exc:
                raise _error(line, col, str(exc)) from None
            out.append(_Token("class", chars, line, col))
        elif c == "{":
            m = _REPEAT.match(text, i)
            if m is None or not (m.group(1) or m.group(3)):
                raise _error(line, col, "expected a repetition like {2}, {2,} or {2,5}")
            lo = int(m.group(1) or 0)
            hi = int(m.group(3)) if m.group(3) else (None if m.group(2) else lo)
            if hi is not None and hi < lo:
                raise _error(
                    line, col, f"repetition {{{lo},{hi}}} has its maximum below its minimum"
                )
            out.append(_Token("repeat", (lo, hi), line, col))
            i = m.end()
        elif c in _SINGLE:
            out.append(_Token(c, c, line, col))
            i += 1
        elif m := _IDENT.match(text, i):
            out.append(_Token("ident", m.group(), line, col))
            i = m.end()
        else:
            raise _error(line, col, f"unexpected character {c!r}")
    return out


def _quoted(
    text: str, i: int, close: str, line: int, col: int, *, keep_escapes: bool = False
) -> tuple[str, int]:
    """The literal starting at `i` up to the unescaped `close`, and the index after it."""
    out: list[str] = []
    while i < len(text):
        c = text[i]
        if c == close:
            return "".join(out), i + 1
        if c == "\n":
            break
        if c == "\\" and keep_escapes:
            out.append(text[i : i + 2] if text[i + 1 : i + 2] != close else close)
            i += 2
        elif c == "\\":
            try:
                ch, i = read_escape(text, i + 1)
            except ValueError as exc:
                raise _error(line, col, str(exc)) from None
            out.append(ch)
        else:
            out.append(c)
            i += 1
    raise _error(line, col, f"unterminated literal (missing {close})")


def _error(line: int, col: int, what: str) -> InvalidConstraint:
    return InvalidConstraint(f"grammar line {line}, column {col}: {what}")


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._i = 0

    def rules(self) -> dict[str, Node]:
        rules: dict[str, Node] = {}
        while self._i < len(self._tokens):
            name = self._next()
            if name.kind != "ident" or self._peek_kind() != "define":
                found = f"{name.value!r}" if name.kind != "ident" else f"{name.value} alone"
                raise _error(name.line, name.col, f"expected a rule (name ::= ...), found {found}")
            self._i += 1
            if name.value in rules:
                raise _error(name.line, name.col, f"rule {name.value!r} is defined twice")
            rules[str(name.value)] = self._alternatives()
        return rules

    def _alternatives(self) -> Node:
        options = [self._sequence()]
        while self._peek_kind() == "|":
            self._i += 1
            options.append(self._sequence())
        return alternatives(options)

    def _sequence(self) -> Node:
        items: list[Node] = []
        while self._i < len(self._tokens) and not self._at_sequence_end():
            items.append(self._postfix(self._primary()))
        return sequence(items)

    def _at_sequence_end(self) -> bool:
        kind = self._tokens[self._i].kind
        return kind in ("|", ")") or (kind == "ident" and self._peek_kind(1) == "define")

    def _primary(self) -> Node:
        tok = self._next()
        match tok.kind:
            case "string":
                return Text(str(tok.value))
            case "class":
                assert isinstance(tok.value, CharClass)
                return tok.value
            case "regex":
                return parse_regex(str(tok.value))
            case ".":
                return ANY_CHAR
            case "ident":
                return Ref(str(tok.value))
            case "(":
                inner = self._alternatives()
                close = self._next()
                if close.kind != ")":
                    raise _error(close.line, close.col, "expected )")
                return inner
        raise _error(tok.line, tok.col, f"unexpected {tok.value!r}")

    def _postfix(self, node: Node) -> Node:
        while True:
            match self._peek_kind():
                case "*":
                    node = Repeat(node, 0, None)
                case "+":
                    node = Repeat(node, 1, None)
                case "?":
                    node = Repeat(node, 0, 1)
                case "repeat":
                    bounds = self._tokens[self._i].value
                    assert isinstance(bounds, tuple)
                    node = Repeat(node, *bounds)
                case _:
                    return node
            self._i += 1

    def _next(self) -> _Token:
        if self._i >= len(self._tokens):
            last = self._tokens[-1] if self._tokens else _Token("", "", 1, 1)
            raise _error(last.line, last.col, "the grammar ends in the middle of a rule")
        tok = self._tokens[self._i]
        self._i += 1
        return tok

    def _peek_kind(self, ahead: int = 0) -> str:
        j = self._i + ahead
        return self._tokens[j].kind if j < len(self._tokens) else ""


def _refs(node: Node) -> list[str]:
    match node:
        case Ref(name):
            return [name]
        case Seq(items) | Alt(items):
            return [r for item in items for r in _refs(item)]
        case Repeat(item):
            return _refs(item)
    return []


def _heights(rules: dict[str, Node]) -> dict[str, float]:
    heights = dict.fromkeys(rules, math.inf)
    changed = True
    while changed:  # a fixpoint: heights only fall, each to a finite value at most once
        changed = False
        for name, body in rules.items():
            h = 1 + height(body, heights)
            if h < heights[name]:
                heights[name], changed = h, True
    return heights
