"""JSON Schema limits: measured by a walk that stops at the first limit passed; schemas
found valid are remembered by digest, within a bound."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from switchyard.servicekit.json_schema import (
    CheckedSchemas,
    InvalidJsonSchema,
    SchemaLimits,
    SchemaTooLarge,
    check_bytes,
    check_json_schema,
    check_shape,
)

SMALL = SchemaLimits(max_bytes=1000, max_nodes=10, max_depth=4, max_properties=3)


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth - 1):
        schema = {"type": "array", "items": schema}
    return schema


def test_a_schema_within_every_limit_passes() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {}, "c": {}}}
    check_bytes(len(orjson.dumps(schema)), SMALL)
    check_shape(schema, SMALL)
    check_shape(_nested(4), SMALL)


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        (
            {"properties": {"a": {}, "b": {}}, "items": {"properties": {"c": {}, "d": {}}}},
            "3 properties",
        ),
        ({"anyOf": [{} for _ in range(10)]}, "10 objects and arrays"),
        (_nested(5), "4 levels"),
        ({"enum": [[[[1]]]]}, "4 levels"),
    ],
    ids=["properties across subschemas", "nodes", "depth", "depth of arrays"],
)
def test_each_limit_is_named_when_passed(schema: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SchemaTooLarge, match=fragment):
        check_shape(schema, SMALL)


def test_the_byte_limit() -> None:
    check_bytes(1000, SMALL)
    with pytest.raises(SchemaTooLarge, match="1001 bytes long; the limit is 1000"):
        check_bytes(1001, SMALL)


def test_scalars_cost_no_nodes() -> None:
    check_shape({"enum": list(range(10_000))}, SMALL)


def test_a_too_large_schema_is_an_invalid_schema() -> None:
    assert issubclass(SchemaTooLarge, InvalidJsonSchema)


def test_the_metaschema_check() -> None:
    assert check_json_schema({"type": "object"}) == {"type": "object"}
    with pytest.raises(InvalidJsonSchema, match="not a valid JSON Schema at properties/a"):
        check_json_schema({"properties": {"a": {"type": "nope"}}})


def test_checked_schemas_remember_a_bounded_number_most_recent_first() -> None:
    checked = CheckedSchemas(size=2)
    a, b, c = (CheckedSchemas.digest(t) for t in (b"a", b"b", b"c"))
    checked.add(a)
    checked.add(b)
    assert a in checked  # a is now the most recent
    checked.add(c)
    assert (a in checked, b in checked, c in checked) == (True, False, True)
