"""JSON from a schema always validates against it; unusable schemas are refused clearly."""

from __future__ import annotations

import json
import random
import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from switchyard.enginesim.structured import (
    InvalidSchema,
    UnsupportedSchema,
    json_from_schema,
    json_object,
    validate_schema,
)

DRAFT7 = "http://json-schema.org/draft-07/schema#"
DRAFT4 = "http://json-schema.org/draft-04/schema#"
SEEDS = range(20)

SCHEMAS: dict[str, Any] = {
    "object": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 3, "maxLength": 8},
            "age": {"type": "integer", "minimum": 18, "exclusiveMaximum": 65},
            "nickname": {"type": "string"},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "type list": {"type": ["string", "null"]},
    "enum": {"enum": ["a", "b", 3]},
    "const": {"const": {"x": [1, 2]}},
    "open interval": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    "integer multiple": {"type": "integer", "multipleOf": 7, "minimum": -50, "maximum": 50},
    "number multiple": {"type": "number", "multipleOf": 0.25, "minimum": 1, "maximum": 3},
    "decimal multiple": {"type": "number", "multipleOf": 0.1, "minimum": 0, "maximum": 1},
    "only a minimum": {"type": "integer", "minimum": 1000000},
    "only a maximum": {"type": "number", "maximum": -3.5},
    "unique array": {
        "type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
        "minItems": 4, "maxItems": 6, "uniqueItems": True,
    },
    "empty array": {"type": "array", "maxItems": 0},
    "prefixItems": {
        "type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}], "items": False,
    },
    "tuple items (draft 7)": {
        "$schema": DRAFT7, "type": "array",
        "items": [{"type": "integer"}, {"type": "string"}], "additionalItems": False,
    },
    "anyOf": {"anyOf": [{"type": "string", "format": "email"}, {"type": "integer"}]},
    "oneOf": {"oneOf": [{"type": "integer", "multipleOf": 2}, {"type": "integer", "multipleOf": 3}]},
    "allOf objects": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
        ],
    },
    "allOf bounds": {"allOf": [{"type": "integer", "minimum": 3}, {"maximum": 5}]},
    "$defs enum": {
        "$defs": {"Color": {"enum": ["red", "green"]}},
        "type": "object", "properties": {"c": {"$ref": "#/$defs/Color"}}, "required": ["c"],
    },
    "definitions (draft 7)": {
        "$schema": DRAFT7,
        "definitions": {"P": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
        "type": "array", "items": {"$ref": "#/definitions/P"}, "minItems": 1,
    },
    "$ref with siblings": {"$defs": {"S": {"type": "string"}}, "$ref": "#/$defs/S", "maxLength": 5},
    "minProperties": {"type": "object", "minProperties": 3, "additionalProperties": {"type": "integer"}},
    "pattern": {"type": "string", "pattern": "^[a-z]{2,4}-\\d{2}$"},
    "unanchored pattern": {"type": "string", "pattern": "[0-9]+x"},
    "date-time": {"type": "string", "format": "date-time"},
    "draft 4 exclusive": {
        "$schema": DRAFT4, "type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1,
    },
    "nested": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                },
                "required": ["address"],
            }
        },
        "required": ["user"],
    },
    "recursive tree": {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                "required": ["v", "kids"],
            }
        },
        "$ref": "#/$defs/node",
    },
    "recursive via root": {
        "type": "object",
        "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
        "required": ["next"],
    },
    "empty": {},
    "boolean": {"type": "boolean"},
    "null": {"type": "null"},
    "true subschemas": {"type": "object", "properties": {"any": True}, "required": ["any"]},
}  # fmt: skip


@pytest.mark.parametrize("schema", SCHEMAS.values(), ids=SCHEMAS.keys())
def test_output_is_compact_json_valid_under_the_schema(schema: Any) -> None:
    for seed in SEEDS:
        out = json_from_schema(schema, random.Random(seed))
        value = json.loads(out)
        jsonschema.validate(value, schema)
        assert out == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_true_schema_and_empty_schema_give_an_object_at_the_top() -> None:
    assert isinstance(json.loads(json_from_schema(True, random.Random(1))), dict)
    assert isinstance(json.loads(json_from_schema({}, random.Random(1))), dict)


def test_optional_properties_are_sometimes_present_and_sometimes_not() -> None:
    schema = SCHEMAS["object"]
    present = {"nickname" in json.loads(json_from_schema(schema, random.Random(s))) for s in SEEDS}
    assert present == {True, False}


def test_arrays_are_short_unless_bounded() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    lengths = {len(json.loads(json_from_schema(schema, random.Random(s)))) for s in SEEDS}
    assert lengths <= {1, 2, 3}


def test_formats_are_well_formed() -> None:
    rng = random.Random(3)
    datetime.fromisoformat(
        json.loads(json_from_schema({"type": "string", "format": "date-time"}, rng))
    )
    date.fromisoformat(json.loads(json_from_schema({"type": "string", "format": "date"}, rng)))
    uuid.UUID(json.loads(json_from_schema({"type": "string", "format": "uuid"}, rng)))
    assert "@" in json.loads(json_from_schema({"type": "string", "format": "email"}, rng))


def test_same_seed_same_document() -> None:
    schema = SCHEMAS["nested"] | {
        "properties": {**SCHEMAS["nested"]["properties"], "n": {"type": "number"}}
    }
    assert json_from_schema(schema, random.Random(9)) == json_from_schema(schema, random.Random(9))


class Category(StrEnum):
    BILLING = "billing"
    TECHNICAL = "technical"
    SHIPPING = "shipping"


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Sentiment(BaseModel):
    label: str
    score: float


class TicketAnalysis(BaseModel):
    category: Category
    priority: Priority
    summary: str
    sentiment: Sentiment
    key_issues: list[str]
    requires_human: bool
    assignee: str | None = None


def test_a_pydantic_model_schema_round_trips_through_the_model() -> None:
    schema = TicketAnalysis.model_json_schema()
    assert "$defs" in schema  # enums and the nested model are $refs
    for seed in SEEDS:
        out = json_from_schema(schema, random.Random(seed))
        jsonschema.validate(json.loads(out), schema)
        ticket = TicketAnalysis.model_validate_json(out)
        assert ticket.key_issues


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer"),
        ({"allOf": [{"const": 1}, {"const": 2}]}, "different `const`"),
        ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "no type satisfies"),
        ({"type": "array", "items": {"type": "boolean"}, "minItems": 3, "uniqueItems": True}, "distinct"),
        ({"$ref": "https://example.com/schema.json"}, "only local"),
        ({"$ref": "#/$defs/missing"}, "does not resolve"),
        ({"$defs": {"a": {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}, "required": ["a"]}}, "$ref": "#/$defs/a"}, "nests too deeply"),
        ({"not": {}}, "could not generate"),
        (False, "no instances"),
    ],
)  # fmt: skip
def test_unsatisfiable_schemas_are_refused(schema: Any, message: str) -> None:
    with pytest.raises(UnsupportedSchema, match=message):
        json_from_schema(schema, random.Random(0))


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ([], "must be an object, not list"),
        ("{}", "must be an object, not str"),
        ({"type": "nope"}, "invalid JSON Schema at \\$.type"),
        ({"type": "string", "minLength": -1}, "invalid JSON Schema at \\$.minLength"),
    ],
)
def test_invalid_schemas_are_refused(schema: Any, message: str) -> None:
    with pytest.raises(InvalidSchema, match=message):
        validate_schema(schema)
    with pytest.raises(InvalidSchema):
        json_from_schema(schema, random.Random(0))


def test_json_object_is_a_small_object() -> None:
    for seed in SEEDS:
        value = json.loads(json_object(random.Random(seed)))
        assert isinstance(value, dict)
        assert 1 <= len(value) <= 3


# An object schema that names no properties admits any object: it gets keys of its own
# (SGLang's json_object is the schema {"type": "object"}; xgrammar then allows any keys).

ANY_OBJECT: dict[str, Any] = {
    "plain": {"type": "object"},
    "no type": {"minProperties": 1},
    "bounded": {"type": "object", "minProperties": 4, "maxProperties": 5},
    "required only": {"type": "object", "required": ["a", "b"]},
    "typed values": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 7}},
    "property names": {"type": "object", "propertyNames": {"pattern": "^[a-z]{2}$"}},
    "named by enum": {"type": "object", "propertyNames": {"enum": ["x", "y", "z"]}},
    "patterns only": {
        "type": "object",
        "patternProperties": {"^n_[0-9]+$": {"type": "integer"}},
        "additionalProperties": False,
    },
    "patterns and more": {
        "type": "object",
        "patternProperties": {"^flag": {"type": "boolean"}},
        "additionalProperties": {"type": "string"},
    },
}  # fmt: skip


@pytest.mark.parametrize("schema", ANY_OBJECT.values(), ids=ANY_OBJECT.keys())
def test_an_object_schema_without_properties_gets_keys(schema: dict[str, Any]) -> None:
    values = [json.loads(json_from_schema(schema, random.Random(seed))) for seed in SEEDS]
    for value in values:
        jsonschema.validate(value, schema)
        assert value, "an object with keys"
    assert len({json.dumps(v, sort_keys=True) for v in values}) > 1, "keys vary with the seed"
    assert json_from_schema(schema, random.Random(4)) == json_from_schema(schema, random.Random(4))


def test_keys_of_its_own_stay_within_the_bounds() -> None:
    sizes = {
        len(json.loads(json_from_schema({"type": "object"}, random.Random(seed)))) for seed in SEEDS
    }
    assert sizes == {1, 2, 3}
    schema = {"type": "object", "minProperties": 4, "maxProperties": 5}
    assert all(
        4 <= len(json.loads(json_from_schema(schema, random.Random(seed)))) <= 5 for seed in SEEDS
    )


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {}},  # declared: none (as xgrammar's strict mode)
        {"type": "object", "additionalProperties": False},
        {"type": "object", "unevaluatedProperties": False},
        {"type": "object", "maxProperties": 0},
        {"type": "object", "propertyNames": False},
        {"type": "object", "not": {"minProperties": 1}},  # keys fail: the last draw adds none
    ],
    ids=["empty-properties", "closed", "unevaluated", "max-0", "no-names", "not"],
)
def test_an_object_that_admits_no_key_of_its_own_is_empty(schema: dict[str, Any]) -> None:
    for seed in SEEDS:
        assert json_from_schema(schema, random.Random(seed)) == "{}"


def test_declared_properties_get_no_undeclared_neighbours() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    for seed in SEEDS:
        assert set(json.loads(json_from_schema(schema, random.Random(seed)))) <= {"a"}
