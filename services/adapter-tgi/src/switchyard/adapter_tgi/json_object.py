"""JSON mode on TGI: a regular expression that admits JSON objects, keys included.

TGI has no "any JSON object" constraint. Its JSON grammars go through outlines-core's
schema-to-regex, where `properties` wins over `type`: `{"type": "object", "properties":
{}}` admits only `{}`, and a schema without `properties` is refused by the router's
validation. So JSON mode is sent as a `regex` grammar instead.

A regular expression cannot count brackets, so nesting is bounded: the object's values
may be objects or arrays, and theirs too, but values at the third level of containers are
scalars (`DEPTH` = 2 levels below the top object). That is outlines-core's own depth for
an unconstrained object, and each further level multiplies the pattern (and the automaton
TGI compiles for it on every new grammar) about eightfold.

Only constructs outlines' regex parser takes are used: groups, alternation, `?`, `*`,
`{n}`, character classes with `\\xNN` escapes. Whitespace is at most one space between
tokens, so the model cannot pad the output with blank lines until `max_tokens`.
"""

from __future__ import annotations

from typing import Final

DEPTH: Final = 2
_WS: Final = "[ ]?"
# Any character JSON allows raw in a string (not `"`, `\`, control characters), or an escape.
_CHAR: Final = r'([^"\\\x00-\x1F]|\\(["\\/bfnrt]|u[0-9a-fA-F]{4}))'
STRING: Final = f'"{_CHAR}*"'
NUMBER: Final = r"(-)?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
_SCALAR: Final = f"{STRING}|{NUMBER}|true|false|null"


def _value(depth: int) -> str:
    if depth == 0:
        return f"({_SCALAR})"
    return f"({_SCALAR}|{_object(depth - 1)}|{_array(depth - 1)})"


def _object(depth: int) -> str:
    member = f"{STRING}{_WS}:{_WS}{_value(depth)}"
    return rf"\{{{_WS}({member}({_WS},{_WS}{member})*)?{_WS}\}}"


def _array(depth: int) -> str:
    item = _value(depth)
    return rf"\[{_WS}({item}({_WS},{_WS}{item})*)?{_WS}\]"


def json_object_regex(depth: int = DEPTH) -> str:
    """A pattern whose full matches are the JSON objects with at most `depth` levels below the top."""
    return _object(depth)


#: What JSON mode sends.
JSON_OBJECT_REGEX: Final = json_object_regex()
