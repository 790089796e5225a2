"""Validate ModelBackends the way the API server does, against the committed CRD.

The API server applies the schema's defaults, rejects unknown fields (kubectl's
field validation is Strict by default), checks the OpenAPI schema and then runs the CEL
rules. Here: `apply_defaults`, jsonschema with `additionalProperties: false` added where the
schema lists properties, and the rules run by `tests.operator.cel`.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from switchyard.operator.crd import CRD_PATH
from tests.operator.cel import evaluate

ROOT = Path(__file__).resolve().parents[2]


@cache
def committed_crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / CRD_PATH).read_text())
    return loaded


def open_api_schema() -> dict[str, Any]:
    schema: dict[str, Any] = committed_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@cache
def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_strict(open_api_schema()))


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting: missing properties with a default get it, recursively."""
    if isinstance(value, dict):
        out = dict(value)
        for name, prop in (schema.get("properties") or {}).items():
            if name not in out and "default" in prop:
                out[name] = copy.deepcopy(prop["default"])
            if name in out:
                out[name] = apply_defaults(prop, out[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in out.items():
                if key not in (schema.get("properties") or {}):
                    out[key] = apply_defaults(extra, item)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def _path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "<root>"


def _cel_errors(schema: dict[str, Any], value: Any, where: list[str]) -> list[str]:
    errors = [
        f"{_path(where)}: {rule['message']}"
        for rule in schema.get("x-kubernetes-validations") or ()
        if not evaluate(rule["rule"], value)
    ]
    if isinstance(value, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if name in value:
                errors += _cel_errors(prop, value[name], [*where, name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, [*where, str(index)])
    return errors


def defaulted(obj: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = apply_defaults(open_api_schema(), obj)
    return result


def validation_errors(obj: dict[str, Any]) -> list[str]:
    """What the API server would say about creating `obj` (empty: accepted)."""
    value = defaulted(obj)
    errors = [
        f"{_path(error.absolute_path)}: {error.message}"
        for error in sorted(_validator().iter_errors(value), key=lambda e: list(e.path))
    ]
    if errors:  # the API server runs CEL only on objects that pass the schema
        return errors
    return _cel_errors(open_api_schema(), value, [])
