"""A small evaluator for the subset of CEL our CRD's validation rules use.

jsonschema cannot run `x-kubernetes-validations`; this runs them, so a test can show that
the CEL text in the CRD and the pydantic validators reject the same objects. Supported:
`self`, field selection, `has()`, `size()`, `matches()`, integer/string/bool literals,
`! - + * / %`, comparisons, `&&`, `||` and parentheses. Anything else is a SyntaxError, so a
new rule outside the subset fails loudly instead of passing unchecked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+)|(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>&&|\|\||==|!=|<=|>=|[<>!().,+\-*/%]))"
)


class CelError(Exception):
    """A runtime error of a rule (the API server reports the rule as failed)."""


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str


def _tokens(source: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    source = source.rstrip()
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if not match or match.end() == pos:
            raise SyntaxError(f"unsupported CEL at {pos}: {source[pos:]!r}")
        kind = match.lastgroup or ""
        out.append(_Tok(kind, match.group(kind)))
        pos = match.end()
    return out


Node = Callable[[Any], Any]


class _Parser:
    def __init__(self, source: str) -> None:
        self.toks = _tokens(source)
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, text: str | None = None) -> _Tok:
        tok = self.peek()
        if tok is None or (text is not None and tok.text != text):
            raise SyntaxError(f"expected {text!r}, got {tok}")
        self.i += 1
        return tok

    def accept(self, *texts: str) -> str | None:
        tok = self.peek()
        if tok is not None and tok.kind == "op" and tok.text in texts:
            self.i += 1
            return tok.text
        return None

    def parse(self) -> Node:
        node = self.or_()
        if self.peek() is not None:
            raise SyntaxError(f"trailing input: {self.peek()}")
        return node

    def or_(self) -> Node:
        left = self.and_()
        while self.accept("||"):
            right = self.and_()
            left = (lambda a, b: lambda s: bool(a(s)) or bool(b(s)))(left, right)
        return left

    def and_(self) -> Node:
        left = self.rel()
        while self.accept("&&"):
            right = self.rel()
            left = (lambda a, b: lambda s: bool(a(s)) and bool(b(s)))(left, right)
        return left

    def rel(self) -> Node:
        left = self.add()
        op = self.accept("==", "!=", "<=", ">=", "<", ">")
        if op is None:
            return left
        right = self.add()
        compare: dict[str, Callable[[Any, Any], bool]] = {
            "==": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "<=": lambda a, b: a <= b,
            ">=": lambda a, b: a >= b,
            "<": lambda a, b: a < b,
            ">": lambda a, b: a > b,
        }
        fn = compare[op]
        return lambda s: fn(left(s), right(s))

    def add(self) -> Node:
        left = self.mul()
        while op := self.accept("+", "-"):
            right = self.mul()
            if op == "+":
                left = (lambda a, b: lambda s: a(s) + b(s))(left, right)
            else:
                left = (lambda a, b: lambda s: a(s) - b(s))(left, right)
        return left

    def mul(self) -> Node:
        left = self.unary()
        while op := self.accept("*", "/", "%"):
            right = self.unary()
            fns: dict[str, Callable[[Any, Any], Any]] = {
                "*": lambda a, b: a * b,
                "/": lambda a, b: a // b,
                "%": lambda a, b: a % b,
            }
            left = (lambda a, b, f: lambda s: f(a(s), b(s)))(left, right, fns[op])
        return left

    def unary(self) -> Node:
        if self.accept("!"):
            inner = self.unary()
            return lambda s: not inner(s)
        if self.accept("-"):
            inner = self.unary()
            return lambda s: -inner(s)
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        while self.accept("."):
            name = self.take().text
            if self.accept("("):
                args = [] if self.accept(")") else self.args()
                node = self._method(node, name, args)
            else:
                node = (lambda base, field: lambda s: _select(base(s), field))(node, name)
        return node

    def args(self) -> list[Node]:
        out = [self.or_()]
        while self.accept(","):
            out.append(self.or_())
        self.take(")")
        return out

    @staticmethod
    def _method(target: Node, name: str, args: list[Node]) -> Node:
        if name == "size" and not args:
            return lambda s: len(target(s))
        if name == "matches" and len(args) == 1:
            return lambda s: re.search(args[0](s), target(s)) is not None
        raise SyntaxError(f"unsupported method {name}/{len(args)}")

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind == "num":
            value = int(tok.text)
            return lambda s: value
        if tok.kind == "str":
            text = tok.text[1:-1].encode().decode("unicode_escape")
            return lambda s: text
        if tok.text == "(":
            inner = self.or_()
            self.take(")")
            return inner
        if tok.text in ("true", "false"):
            flag = tok.text == "true"
            return lambda s: flag
        if tok.text == "self":
            return lambda s: s
        if tok.text == "has":
            self.take("(")
            path = [self.take().text]
            while self.accept("."):
                path.append(self.take().text)
            self.take(")")
            if path[0] != "self" or len(path) < 2:
                raise SyntaxError("has() takes a field selection of self")
            return lambda s: _has(s, path[1:])
        raise SyntaxError(f"unsupported token {tok}")


def _select(value: Any, field: str) -> Any:
    if not isinstance(value, dict) or field not in value:
        raise CelError(f"no such key: {field}")
    return value[field]


def _has(value: Any, path: list[str]) -> bool:
    for field in path[:-1]:
        value = _select(value, field)
    return isinstance(value, dict) and path[-1] in value


def compile_rule(source: str) -> Node:
    return _Parser(source).parse()


def evaluate(source: str, self_value: Any) -> bool:
    """The rule's verdict on `self_value`; a runtime error counts as a failed rule."""
    try:
        return bool(compile_rule(source)(self_value))
    except CelError:
        return False
