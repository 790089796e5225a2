"""What TGI's JSON grammars allow: a schema as outlines-core reads it, for the shared writer.

TGI turns a JSON schema into a regex with outlines-core (the revision its router pins),
which reads ONE keyword per schema node, the first present of `properties`, `allOf`,
`anyOf`, `oneOf`, `prefixItems`, `enum`, `const`, `$ref`, `type`. So a node with
`properties` is an object with exactly those keys, whatever its `type`,
`additionalProperties` or `minProperties` say: `{"type": "object", "properties": {}}`
admits only `{}`. A non-empty node with none of the keywords, or a node that is not an
object, cannot be compiled. This module rewrites a schema into one the engine-neutral
writer (`structured.SchemaWriter`) reads the same way; outlines-core's other quirks
(e.g. nested `{"type": "object"}` nesting at most two levels) are left to the writer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

_KEYWORDS: Final = (
    "properties", "allOf", "anyOf", "oneOf", "prefixItems", "enum", "const", "$ref", "type",
)  # fmt: skip
_DEFINITIONS: Final = ("$defs", "definitions")
_SCHEMA_LISTS: Final = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_VALUES: Final = ("items", "additionalProperties")


class OutlinesError(ValueError):
    """outlines-core cannot turn the schema into a regex; the text is its message."""


def outlines_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` with every node reduced to what outlines-core makes of it."""
    return _node(schema)


def _node(node: object) -> dict[str, Any]:
    if not isinstance(node, Mapping):
        raise OutlinesError("Invalid JSON Schema: expected an object")
    out = {k: v for k, v in node.items() if k in _DEFINITIONS}
    for key in _DEFINITIONS:
        if isinstance(out.get(key), Mapping):
            out[key] = {name: _lenient(sub) for name, sub in out[key].items()}
    if not node:
        return out  # any JSON value
    keyword = next((k for k in _KEYWORDS if k in node), None)
    if keyword is None:
        raise OutlinesError(
            f"Unsupported JSON Schema structure {_compact(node)} \n"
            "Make sure it is valid to the JSON Schema specification and check if it's "
            "supported by Outlines.\nIf it should be supported, please open an issue."
        )
    if keyword == "properties":
        props = node["properties"]
        if not isinstance(props, Mapping):
            raise OutlinesError("'properties' not found or not an object")
        required = node.get("required")
        names = required if isinstance(required, list) else []
        return out | {
            "type": "object",
            "properties": {name: _node(sub) for name, sub in props.items()},
            "required": [n for n in names if n in props],
            "additionalProperties": False,
        }
    rest = dict(node)
    for key in _SCHEMA_LISTS:
        if isinstance(rest.get(key), list):
            rest[key] = [_node(sub) for sub in rest[key]]
    for key in _SCHEMA_VALUES:
        if isinstance(rest.get(key), Mapping):
            rest[key] = _node(rest[key])
    return rest | out


def _lenient(node: object) -> object:
    """A definition: rewritten if it is a schema outlines-core could read, else kept as is
    (only a `$ref` to it would fail, and then the writer says so)."""
    try:
        return _node(node)
    except OutlinesError:
        return node


def _compact(node: Mapping[str, Any]) -> str:
    return json.dumps(node, separators=(",", ":"), ensure_ascii=False)
