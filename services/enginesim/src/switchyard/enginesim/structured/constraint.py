"""A structured-output constraint: what kind, its value, and how to write conforming text."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from switchyard.enginesim.structured.errors import InvalidConstraint, InvalidSchema
from switchyard.enginesim.structured.grammar import parse_grammar
from switchyard.enginesim.structured.regex import Regex
from switchyard.enginesim.structured.schema import SchemaWriter, json_object

ConstraintKind = Literal["json_schema", "json_object", "regex", "choice", "grammar"]
ConstraintValue = str | Sequence[str] | Mapping[str, Any] | None


def choice(choices: Sequence[str], rng: random.Random) -> str:
    """One of `choices`; InvalidConstraint if there are none."""
    if not choices:
        raise InvalidConstraint("choice needs at least one option")
    return rng.choice(choices)


@dataclass(frozen=True, slots=True)
class Constraint:
    """What the output must conform to, checked when built (a bad one raises ConstraintError).

    `value` by kind: json_schema, a schema object or its JSON text; json_object, None;
    regex, a pattern; choice, a sequence of strings; grammar, EBNF text.
    """

    kind: ConstraintKind
    value: ConstraintValue = None
    _write: Callable[[random.Random], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_write", _prepare(self.kind, self.value))

    def generate(self, rng: random.Random) -> str:
        """Text that conforms to the constraint, chosen with `rng`."""
        return self._write(rng)

    def fingerprint(self) -> str:
        """A stable text identifying the constraint (for seeding, never Python's hash)."""
        if isinstance(self.value, Mapping):
            return f"{self.kind}:{json.dumps(self.value, sort_keys=True, default=str)}"
        if isinstance(self.value, str) or self.value is None:
            return f"{self.kind}:{self.value}"
        return f"{self.kind}:{json.dumps(list(self.value))}"


def _prepare(kind: str, value: ConstraintValue) -> Callable[[random.Random], str]:
    match kind:
        case "json_schema":
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError as exc:
                    raise InvalidSchema(f"the JSON schema is not valid JSON: {exc}") from None
            if not isinstance(value, Mapping):
                raise InvalidSchema("a JSON Schema must be an object")
            return SchemaWriter(value).write
        case "json_object":
            if value is not None:
                raise InvalidConstraint("json_object takes no value")
            return json_object
        case "regex":
            return Regex(_text(kind, value)).generate
        case "choice":
            if isinstance(value, str | Mapping) or value is None:
                raise InvalidConstraint("choice needs a list of strings")
            options = tuple(value)
            if not options or not all(isinstance(o, str) for o in options):
                raise InvalidConstraint("choice needs a non-empty list of strings")
            return lambda rng: choice(options, rng)
        case "grammar":
            return parse_grammar(_text(kind, value)).generate
    raise InvalidConstraint(
        f"unknown constraint kind {kind!r} (expected one of {get_args(ConstraintKind)})"
    )


def _text(kind: str, value: ConstraintValue) -> str:
    if not isinstance(value, str):
        raise InvalidConstraint(f"a {kind} constraint needs a string")
    return value
