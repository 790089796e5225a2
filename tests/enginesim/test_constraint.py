"""Constraints are checked when built and generate conforming text."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import jsonschema
import pytest

from switchyard.enginesim.structured import (
    Constraint,
    ConstraintError,
    InvalidConstraint,
    InvalidSchema,
    UnsupportedSchema,
    choice,
)

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


@pytest.mark.parametrize("schema", [SCHEMA, json.dumps(SCHEMA)])
def test_json_schema_as_object_or_text(schema: Any) -> None:
    out = Constraint("json_schema", schema).generate(random.Random(1))
    jsonschema.validate(json.loads(out), SCHEMA)


def test_each_kind_generates_conforming_text() -> None:
    rng = random.Random(2)
    assert isinstance(json.loads(Constraint("json_object").generate(rng)), dict)
    assert re.fullmatch(r"[a-c]{4}", Constraint("regex", r"[a-c]{4}").generate(rng))
    assert Constraint("choice", ["left", "right"]).generate(rng) in ("left", "right")
    assert Constraint("grammar", 'root ::= "x"+').generate(rng).strip("x") == ""


@pytest.mark.parametrize(
    ("kind", "value", "error", "message"),
    [
        ("json_schema", "{not json", InvalidSchema, "not valid JSON"),
        ("json_schema", [1], InvalidSchema, "must be an object"),
        ("json_schema", {"type": 3}, InvalidSchema, "invalid JSON Schema"),
        ("json_schema", {"type": "integer", "minimum": 2, "maximum": 1}, UnsupportedSchema, "no integer"),
        ("json_object", "x", InvalidConstraint, "takes no value"),
        ("regex", "(", InvalidConstraint, "invalid regular expression"),
        ("regex", None, InvalidConstraint, "needs a string"),
        ("choice", [], InvalidConstraint, "non-empty list"),
        ("choice", "ab", InvalidConstraint, "list of strings"),
        ("choice", ["a", 1], InvalidConstraint, "list of strings"),
        ("grammar", "root ::= nothing", InvalidConstraint, "undefined rule"),
        ("xml", "x", InvalidConstraint, "unknown constraint kind 'xml'"),
    ],
)  # fmt: skip
def test_bad_constraints_fail_when_built_or_used(
    kind: Any, value: Any, error: type[ConstraintError], message: str
) -> None:
    with pytest.raises(error, match=message):
        Constraint(kind, value).generate(random.Random(0))
    assert issubclass(error, ValueError)  # front-ends answer every one with a 400


def test_fingerprint_is_stable_and_tells_values_apart() -> None:
    a = Constraint("json_schema", {"b": 1, "a": 2} | {"type": "object"})
    b = Constraint("json_schema", {"type": "object", "a": 2, "b": 1})
    assert a.fingerprint() == b.fingerprint()
    assert Constraint("choice", ["x"]).fingerprint() != Constraint("choice", ["y"]).fingerprint()
    assert (
        Constraint("regex", "x").fingerprint()
        != Constraint("grammar", 'root ::= "x"').fingerprint()
    )


def test_choice_needs_options() -> None:
    with pytest.raises(InvalidConstraint):
        choice([], random.Random(0))
