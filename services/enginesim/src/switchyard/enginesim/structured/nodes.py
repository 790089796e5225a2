"""The tree grammars and regular expressions are parsed into, and the writer of its sentences.

The writer picks alternatives and repeat counts at random until a rule nesting depth or an
output size is reached, then takes, everywhere, the way out with the shortest derivation,
so that every sentence ends (`heights`: each rule's shortest derivation depth).
"""

from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass
from typing import Final

from switchyard.enginesim.structured.errors import UnsupportedConstraint

#: What `.` and negated classes write: readable characters, no control whitespace.
READABLE: Final = string.ascii_letters + string.digits + string.punctuation + " "
_RANDOM_DEPTH: Final = 10  # rule nesting before writing heads for the shortest way out
_SOFT_SIZE: Final = 512  # characters, likewise
_HARD_SIZE: Final = 100_000  # characters: the shortest sentences are absurdly long
_EXTRA_REPEATS: Final = 3  # an open-ended repeat writes at most this many more than its minimum


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class CharClass:
    ranges: tuple[tuple[int, int], ...]  # inclusive code point ranges
    negated: bool


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


Node = Text | CharClass | Ref | Seq | Alt | Repeat
ANY_CHAR: Final = CharClass((), negated=True)
EMPTY: Final = Text("")
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a", "0": "\0"}
_HEX: Final = {"x": 2, "u": 4, "U": 8}
_WORD: Final = tuple((ord(c), ord(c)) for c in string.ascii_letters + string.digits + "_")
#: What `\d`, `\w`, `\s` write (readable characters only); their capitals are negations.
CATEGORIES: Final = {"d": ((48, 57),), "w": _WORD, "s": ((32, 32),)}


def read_escape(text: str, i: int) -> tuple[str, int]:
    """The character escaped at `i` (just after a backslash) and the index after it: C's
    letters, `\\xHH`, `\\uHHHH`, `\\UHHHHHHHH`, else the character itself (ValueError if malformed)."""
    if i >= len(text):
        raise ValueError("a backslash ends the text")
    c, width = text[i], _HEX.get(text[i], 0)
    if not width:
        return _ESCAPES.get(c, c), i + 1
    digits = text[i + 1 : i + 1 + width]
    if len(digits) != width or any(d not in string.hexdigits for d in digits):
        raise ValueError(f"\\{c} needs {width} hex digits")
    return chr(int(digits, 16)), i + 1 + width


def read_class(text: str, i: int, *, regex: bool = False) -> tuple[CharClass, int]:
    """The class whose `[` is just before `i`, and the index after its `]` (ValueError if
    malformed): `^` negates; ranges `a-z`; escapes. In a regex (`regex`), `\\d \\w \\s` and
    their negations, a `]` first is literal and `\\b` is a backspace."""
    negated = text.startswith("^", i)
    i += negated
    start, ranges = i, list[tuple[int, int]]()
    while i < len(text) and (text[i] != "]" or (regex and i == start)):
        letter = text[i + 1 : i + 2] if regex and text[i] == "\\" else ""
        if letter and letter.lower() in CATEGORIES:
            inside = CATEGORIES[letter.lower()]
            if letter.isupper():  # a negation inside a class: the readable rest
                inside = tuple((ord(c), ord(c)) for c in READABLE if not _within(c, inside))
            ranges.extend(inside)
            i += 2
            continue
        lo, i = _class_char(text, i, regex)
        if text.startswith("-", i) and not text.startswith("-]", i):
            hi, i = _class_char(text, i + 1, regex)
            if hi < lo:
                raise ValueError(f"range {chr(lo)!r}-{chr(hi)!r} is out of order")
            ranges.append((lo, hi))
        else:
            ranges.append((lo, lo))
    if i >= len(text):
        raise ValueError("unterminated character class (missing ])")
    if not ranges and not negated:
        raise ValueError("an empty character class matches nothing")
    return CharClass(tuple(ranges), negated), i + 1


def _class_char(text: str, i: int, regex: bool) -> tuple[int, int]:
    if i >= len(text):
        raise ValueError("unterminated character class (missing ])")
    if text[i] != "\\":
        return ord(text[i]), i + 1
    if regex and text.startswith("b", i + 1):  # a backspace inside a class
        return 8, i + 2
    char, i = read_escape(text, i + 1)
    return ord(char), i


def _within(c: str, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= ord(c) <= hi for lo, hi in ranges)


def sequence(items: list[Node]) -> Node:
    return items[0] if len(items) == 1 else Seq(tuple(items))


def alternatives(options: list[Node]) -> Node:
    return options[0] if len(options) == 1 else Alt(tuple(options))


def height(node: Node, rules: dict[str, float]) -> float:
    """Depth of the shallowest derivation of `node`, given each rule's."""
    match node:
        case Ref(name):
            return rules[name]
        case Seq(items):
            return max((height(i, rules) for i in items), default=0)
        case Alt(options):
            return min(height(o, rules) for o in options)
        case Repeat(item, lo):
            return 0 if lo == 0 else height(item, rules)
    return 0


def write(
    node: Node, rng: random.Random, rules: dict[str, Node] | None = None,
    heights: dict[str, float] | None = None,
) -> str:  # fmt: skip
    """One sentence of `node` (whose `Ref`s name `rules`), chosen with `rng`."""
    writer = _Writer(rules or {}, heights or {}, rng)
    writer.emit(node, 0)
    return "".join(writer.out)


class _Writer:
    def __init__(
        self, rules: dict[str, Node], heights: dict[str, float], rng: random.Random
    ) -> None:
        self._rules, self._heights, self._rng = rules, heights, rng
        self.out: list[str] = []
        self._size = 0

    def emit(self, node: Node, depth: int) -> None:
        match node:
            case Text(text):
                self._write(text)
            case CharClass():
                self._write(self._char(node))
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
        self.out.append(text)

    def _shortest(self, depth: int) -> bool:
        return depth >= _RANDOM_DEPTH or self._size >= _SOFT_SIZE

    def _option(self, options: tuple[Node, ...], depth: int) -> Node:
        heights = [height(o, self._heights) for o in options]
        if self._shortest(depth):
            return options[heights.index(min(heights))]
        return self._rng.choice([o for o, h in zip(options, heights, strict=True) if h < math.inf])

    def _count(self, item: Node, lo: int, hi: int | None, depth: int) -> int:
        if self._shortest(depth) or math.isinf(height(item, self._heights)):
            return lo
        top = lo + _EXTRA_REPEATS if hi is None else min(hi, lo + _EXTRA_REPEATS)
        return self._rng.randint(lo, top)

    def _char(self, cls: CharClass) -> str:
        if cls.negated:
            allowed = [c for c in READABLE if not _within(c, cls.ranges)]
            if not allowed:
                raise UnsupportedConstraint(
                    "a negated character class matches no readable character"
                )
            return self._rng.choice(allowed)
        # Uniform over the characters, not the ranges: `[a-z0]` is rarely `0`.
        k = self._rng.randrange(sum(hi - lo + 1 for lo, hi in cls.ranges))
        for lo, hi in cls.ranges:
            if k <= hi - lo:
                return chr(lo + k)
            k -= hi - lo + 1
        raise AssertionError("unreachable: k is below the class's size")
