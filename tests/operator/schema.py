"""Validate ModelBackends the way the API server does, against the committed CRD.

On create and update the API server (apiextensions-apiserver) prunes or, with kubectl's
default Strict field validation, refuses unknown fields; applies the schema's defaults
top-down (a defaulted object gets its own fields' defaults too); validates the OpenAPI
schema; checks `x-kubernetes-list-type` sets and maps; and then runs the CEL rules of every
node present, unless a schema error "blocks" them (a missing required field, a wrong type,
an enum or length violation: the rules would read what is not there). Here: `apply_defaults`
(`pkg/apiserver/schema/defaulting/algorithm.go`), jsonschema with `additionalProperties:
false` where the schema lists properties, `list_errors` (`schema/listtype`), and
`cel_errors` run by cel-python (`schema/cel/validation.go`; `self` is each node's value).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from switchyard.operator.crd import CRD_PATH
from tests.operator.cel import evaluation, uses_old_self

ROOT = Path(__file__).resolve().parents[2]
Schema = dict[str, Any]

#: jsonschema keywords whose failure the API server reports as NotSupported, Required,
#: TooLong, TooMany or TypeInvalid: errors that stop the CEL rules from running.
BLOCKING = frozenset(
    {"type", "required", "enum", "maxLength", "maxItems", "maxProperties", "additionalProperties"}
)
BLOCKED = (
    "some validation rules were not checked because the object was invalid; correct the "
    "existing errors to complete validation"
)


@cache
def committed_crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / CRD_PATH).read_text())
    return loaded


def schema_of(crd: dict[str, Any]) -> Schema:
    schema: Schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def open_api_schema() -> Schema:
    return schema_of(committed_crd())


def strict(node: Any) -> Any:
    """The schema with unknown fields refused (kubectl's Strict field validation)."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items()}
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def path_text(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "<root>"


def schema_errors(schema: Schema, value: Any, where: str = "") -> list[tuple[str, bool]]:
    """(message, blocking) for each OpenAPI violation of `value`."""
    validator = jsonschema.Draft7Validator(strict(schema))
    out = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        path = path_text([*([where] if where else []), *error.absolute_path])
        out.append((f"{path}: {error.message}", error.validator in BLOCKING))
    return out


def apply_defaults(schema: Schema, value: Any) -> Any:
    """Structural defaulting: a missing (or null) property with a default gets a copy of it,
    then every property present is defaulted in turn (so a defaulted object gets the defaults
    of its own fields), and so are map values and list items."""
    if isinstance(value, dict):
        out = dict(value)
        properties = schema.get("properties") or {}
        for name, prop in properties.items():
            if "default" in prop and out.get(name) is None:
                out[name] = copy.deepcopy(prop["default"])
        extra = schema.get("additionalProperties")
        for key, item in out.items():
            if key in properties:
                out[key] = apply_defaults(properties[key], item)
            elif isinstance(extra, dict):
                out[key] = apply_defaults(extra, item)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def _children(
    schema: Schema, value: Any, where: list[str]
) -> Iterator[tuple[Schema, Any, list[str]]]:
    """The schema nodes below `schema` that `value` has a value for."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                yield properties[key], item, [*where, key]
            elif isinstance(extra, dict):
                yield extra, item, [*where, key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield schema["items"], item, [*where, str(index)]


def cel_errors(schema: Schema, value: Any, where: list[str], old: Any = None) -> list[str]:
    """Every rule of `schema` and of the nodes below it that `value` fills, with `self` bound
    to that node's value. A rule evaluating to false says its message; a rule that fails to
    evaluate (no such key, a type mismatch) says so, as the server does. Transition rules
    (`oldSelf`) run only with an `old` value: never on create; on a default, the server
    passes the default as its own old value."""
    if value is None:
        return []
    errors = []
    for rule in schema.get("x-kubernetes-validations") or ():
        if uses_old_self(rule["rule"]) and old is None:
            continue
        passed, error = evaluation(rule["rule"], value, old)
        if passed:
            continue
        message = (rule.get("message") or rule["rule"]).strip()
        kind = schema.get("type", "object")
        if error is not None:
            errors.append(
                f'{path_text(where)}: Invalid value: "{kind}": {error} evaluating rule: {message}'
            )
        else:
            errors.append(f"{path_text(where)}: {message}")
    for child, item, path in _children(schema, value, where):
        old_item = _child_value(old, path[-1]) if old is not None else None
        errors += cel_errors(child, item, path, old_item)
    return errors


def _child_value(old: Any, step: str) -> Any:
    if isinstance(old, dict):
        return old.get(step)
    if isinstance(old, list) and step.isdigit() and int(step) < len(old):
        return old[int(step)]
    return None


def list_errors(schema: Schema, value: Any, where: list[str]) -> list[str]:
    """Duplicates in `x-kubernetes-list-type: set` lists and in the keys of `map` lists."""
    errors = []
    if isinstance(value, list):
        seen: set[str] = set()
        keys = schema.get("x-kubernetes-list-map-keys") or []
        for index, item in enumerate(value):
            if schema.get("x-kubernetes-list-type") == "set":
                identity = json.dumps(item, sort_keys=True)
            elif schema.get("x-kubernetes-list-type") == "map" and isinstance(item, dict):
                identity = json.dumps([item.get(k) for k in keys])
            else:
                continue
            if identity in seen:
                errors.append(f"{path_text([*where, str(index)])}: Duplicate value: {identity}")
            seen.add(identity)
    for child, item, path in _children(schema, value, where):
        errors += list_errors(child, item, path)
    return errors


def defaulted(obj: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = apply_defaults(open_api_schema(), obj)
    return result


def validation_errors(obj: dict[str, Any], schema: Schema | None = None) -> list[str]:
    """What the API server would say about creating `obj` (empty: accepted)."""
    schema = schema or open_api_schema()
    value = apply_defaults(schema, obj)
    found = schema_errors(schema, value)
    errors = [message for message, _ in found] + list_errors(schema, value, [])
    if any(blocking for _, blocking in found):
        return [*errors, BLOCKED]
    return errors + cel_errors(schema, value, [])
