"""Sentences of an EBNF grammar: the GBNF / xgrammar dialect, and Lark's `name: ...` rules.

Supported: rules `name ::= alternatives` (or `name: alternatives`), spanning lines; string
literals in double quotes with escapes; character classes `[a-z0-9_]`, `[^"\\\\]`; `.`;
grouping; `|`; `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`; rule references; `#` comments; Lark
`/regex/flags` terminals. The start rule is `root`, else `start`, else the first rule.

Generation picks alternatives at random until a nesting depth or output size is reached,
then takes, everywhere, the alternative with the shortest derivation, so it always ends.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Final

from switchyard.enginesim.structured.errors import InvalidConstraint, UnsupportedConstraint
from switchyard.enginesim.structured.regex import READABLE, compile_regex, text_from_regex

_RANDOM_DEPTH: Final = 10  # rule nesting before generation heads for the shortest way out
_SOFT_SIZE: Final = 512  # characters, likewise
_HARD_SIZE: Final = 100_000  # characters: the grammar's shortest sentences are absurdly long
_EXTRA_REPEATS: Final = 3
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "0": "\0"}
_HEX_ESCAPES: Final = {"x": 2, "u": 4, "U": 8}
_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_REPEAT: Final = re.compile(r"\{\s*(\d*)\s*(,?)\s*(\d*)\s*\}")
_SINGLE: Final = frozenset("()|*+?.")


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class CharClass:
    ranges: tuple[tuple[int, int], ...]  # inclusive code point ranges
    negated: bool


@dataclass(frozen=True, slots=True)
class Pattern:
    regex: str


@dataclass(frozen=True, slots=True)
class Ref:
    name: str


@dataclass(frozen=True, slots=True)
class Seq:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Alt:
    options: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Repeat:
    item: Node
    lo: int
    hi: int | None


Node = Text | CharClass | Pattern | Ref | Seq | Alt | Repeat
ANY_CHAR: Final = CharClass((), negated=True)


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
        out: list[str] = []
        _Writer(self, rng, out).emit(Ref(self.start), 0)
        return "".join(out)


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
            chars, i = _char_class(text, i + 1, line, col)
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
            ch, i = _escape(text, i + 1, line, col)
            out.append(ch)
        else:
            out.append(c)
            i += 1
    raise _error(line, col, f"unterminated literal (missing {close})")


def _escape(text: str, i: int, line: int, col: int) -> tuple[str, int]:
    """The character escaped at `i` (just after the backslash), and the index after it."""
    if i >= len(text):
        raise _error(line, col, "a backslash ends the grammar")
    c = text[i]
    width = _HEX_ESCAPES.get(c)
    if width is not None:
        digits = text[i + 1 : i + 1 + width]
        if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
            raise _error(line, col, f"\\{c} needs {width} hex digits")
        return chr(int(digits, 16)), i + 1 + width
    return _ESCAPES.get(c, c), i + 1


def _char_class(text: str, i: int, line: int, col: int) -> tuple[CharClass, int]:
    negated = text.startswith("^", i)
    i += negated
    ranges: list[tuple[int, int]] = []
    while i < len(text) and text[i] != "]":
        lo, i = _class_char(text, i, line, col)
        if text.startswith("-", i) and not text.startswith("-]", i):
            hi, i = _class_char(text, i + 1, line, col)
            if hi < lo:
                raise _error(line, col, f"range {chr(lo)!r}-{chr(hi)!r} is out of order")
            ranges.append((lo, hi))
        else:
            ranges.append((lo, lo))
    if i >= len(text):
        raise _error(line, col, "unterminated character class (missing ])")
    if not ranges and not negated:
        raise _error(line, col, "an empty character class matches nothing")
    return CharClass(tuple(ranges), negated), i + 1


def _class_char(text: str, i: int, line: int, col: int) -> tuple[int, int]:
    if i >= len(text):
        raise _error(line, col, "unterminated character class (missing ])")
    if text[i] == "\\":
        ch, i = _escape(text, i + 1, line, col)
        return ord(ch), i
    return ord(text[i]), i + 1


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
        return options[0] if len(options) == 1 else Alt(tuple(options))

    def _sequence(self) -> Node:
        items: list[Node] = []
        while self._i < len(self._tokens) and not self._at_sequence_end():
            items.append(self._postfix(self._primary()))
        return items[0] if len(items) == 1 else Seq(tuple(items))

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
                compile_regex(str(tok.value))
                return Pattern(str(tok.value))
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


def _height(node: Node, rules: dict[str, float]) -> float:
    """Depth of the shallowest derivation of `node`, given each rule's."""
    match node:
        case Ref(name):
            return rules[name]
        case Seq(items):
            return max((_height(i, rules) for i in items), default=0)
        case Alt(options):
            return min(_height(o, rules) for o in options)
        case Repeat(item, lo):
            return 0 if lo == 0 else _height(item, rules)
    return 0


def _heights(rules: dict[str, Node]) -> dict[str, float]:
    heights = dict.fromkeys(rules, math.inf)
    changed = True
    while changed:  # a fixpoint: heights only fall, each to a finite value at most once
        changed = False
        for name, body in rules.items():
            h = 1 + _height(body, heights)
            if h < heights[name]:
                heights[name], changed = h, True
    return heights


class _Writer:
    def __init__(self, grammar: Grammar, rng: random.Random, out: list[str]) -> None:
        self._rules = grammar.rules
        self._heights = grammar.heights
        self._rng = rng
        self._out = out
        self._size = 0

    def emit(self, node: Node, depth: int) -> None:
        match node:
            case Text(text):
                self._write(text)
            case CharClass():
                self._write(self._char(node))
            case Pattern(regex):
                self._write(text_from_regex(regex, self._rng))
            case Ref(name):
                self.emit(self._rules[name], depth + 1)
            case Seq(items):
                for item in items:
                    self.emit(item, depth)
            case Alt(options):
                self.emit(self._option(options, depth), depth)
            case Repeat(item, lo, hi):
                for _ in range(self._count(item, lo, hi, depth)):
                    self.emit(item, depth)

    def _write(self, text: str) -> None:
        self._size += len(text)
        if self._size > _HARD_SIZE:
            raise UnsupportedConstraint("the grammar's sentences are too long to generate")
        self._out.append(text)

    def _shortest(self, depth: int) -> bool:
        return depth >= _RANDOM_DEPTH or self._size >= _SOFT_SIZE

    def _option(self, options: tuple[Node, ...], depth: int) -> Node:
        heights = [_height(o, self._heights) for o in options]
        if self._shortest(depth):
            return options[heights.index(min(heights))]
        return self._rng.choice([o for o, h in zip(options, heights, strict=True) if h < math.inf])

    def _count(self, item: Node, lo: int, hi: int | None, depth: int) -> int:
        if self._shortest(depth) or math.isinf(_height(item, self._heights)):
            return lo
        top = lo + _EXTRA_REPEATS if hi is None else min(hi, lo + _EXTRA_REPEATS)
        return self._rng.randint(lo, top)

    def _char(self, cls: CharClass) -> str:
        def inside(c: str) -> bool:
            return any(lo <= ord(c) <= hi for lo, hi in cls.ranges)

        if cls.negated:
            allowed = [c for c in READABLE if not inside(c)]
            if not allowed:
                raise UnsupportedConstraint(
                    "a negated character class excludes every readable character"
                )
            return self._rng.choice(allowed)
        lo, hi = self._rng.choice(cls.ranges)
        return chr(self._rng.randint(lo, hi))
