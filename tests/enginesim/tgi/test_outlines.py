"""outlines-core's reading of a JSON schema: one keyword per node, `properties` first."""

from __future__ import annotations

import pytest

from switchyard.enginesim.tgi.engine import OutlinesError, outlines_schema


def _closed(properties: dict[str, object], required: list[str]) -> dict[str, object]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def test_properties_win_over_every_other_keyword_at_every_level() -> None:
    schema = {
        "$defs": {"Inner": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        "type": "object",
        "properties": {
            "inner": {"$ref": "#/$defs/Inner"},
            "list": {"type": "array", "items": {"properties": {}, "minProperties": 1}},
            "either": {"anyOf": [{"type": "null"}, {"properties": {"y": {"const": 1}}}]},
        },
        "required": ["inner", "missing"],
        "additionalProperties": True,
        "minProperties": 3,
    }
    assert outlines_schema(schema) == {
        "$defs": {"Inner": _closed({"x": {"type": "integer"}}, [])},
        **_closed(
            {
                "inner": {"$ref": "#/$defs/Inner"},
                "list": {"type": "array", "items": _closed({}, [])},
                "either": {"anyOf": [{"type": "null"}, _closed({"y": {"const": 1}}, [])]},
            },
            ["inner"],  # a required name that is not a property is ignored
        ),
    }


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"properties": {"a": {"title": "A"}}}, 'Unsupported JSON Schema structure {"title":"A"}'),
        ({"properties": {"a": True}}, "Invalid JSON Schema: expected an object"),
        ({"properties": {"a": {"anyOf": [False]}}}, "Invalid JSON Schema: expected an object"),
        ({"properties": []}, "'properties' not found or not an object"),
    ],
)
def test_what_outlines_cannot_compile(schema: dict[str, object], message: str) -> None:
    with pytest.raises(OutlinesError) as caught:
        outlines_schema(schema)
    assert str(caught.value).startswith(message)


def test_an_empty_node_is_any_value() -> None:
    assert outlines_schema({"properties": {"a": {}}})["properties"] == {"a": {}}
