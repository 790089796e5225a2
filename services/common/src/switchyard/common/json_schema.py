"""Checking a JSON Schema document against its metaschema, shared by the edge and the adapters."""

from __future__ import annotations

from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for


class InvalidJsonSchema(ValueError):
    """The document is not a JSON Schema; the message says where and why."""


def check_json_schema(schema: Any) -> dict[str, Any]:
    """Return `schema` if it is a valid JSON Schema object (draft from `$schema`, else 2020-12)."""
    if not isinstance(schema, dict):
        raise InvalidJsonSchema("the JSON Schema must be a JSON object")
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.path) or "(root)"
        raise InvalidJsonSchema(f"not a valid JSON Schema at {path}: {exc.message}") from None
    return schema
