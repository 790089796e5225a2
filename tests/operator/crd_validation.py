"""The checks the API server makes when a CustomResourceDefinition is created, offline.

kmock stores a CRD without looking at it; a real API server refuses one whose schema is not
structural, whose defaults are invalid, or whose CEL rules do not compile. `crd_errors`
mirrors apiextensions-apiserver:

- `pkg/apiserver/schema/validation.go` and `complete.go` (structural schemas): a `type` on
  every node except under `x-kubernetes-int-or-string` / `x-kubernetes-preserve-unknown-
  fields`; an object at the root; `items` on arrays; no `additionalProperties` at the root
  or beside `properties`; root `metadata` constraining at most `name` and `generateName`;
  inside `anyOf`/`allOf`/`oneOf`/`not` no type, default, description, title, nullable,
  `x-kubernetes-*` or `metadata`, and no property the structural part lacks;
- `pkg/apis/apiextensions/validation/validation.go`: unsupported keywords (`$ref`,
  `definitions`, `patternProperties`, `uniqueItems`, ...); no defaults in the top-level
  `metadata`, `apiVersion`, `kind`; `x-kubernetes-list-type` / `list-map-keys` / `map-type`
  (map keys scalar, required or defaulted; set items atomic); each rule's message and
  fieldPath; only certain keywords at the root when the status subresource is on; printer
  columns' types, formats and JSON paths;
- `pkg/apiserver/schema/defaulting/validation.go` (`ValidateDefaults`): every `default`
  must be pruned (no field the node's schema does not know), valid for the node's schema,
  and, only if it is, pass the CEL rules of the node and of every node below it, evaluated on
  the default exactly as written: no nested defaulting, `self` bound to the default at that
  node (and to the parts of the default below it for the rules below), and transition rules
  run too, with `oldSelf` bound to the default itself (the server passes it as the old
  value; with CRDValidationRatcheting also without one, which skips them);
- CEL compilation (`schema/cel/compilation.go`): every rule compiles (cel-python parses it)
  and names only fields the schema declares at its node (the server type-checks rules
  against the schema; root rules see `apiVersion`, `kind`, `metadata.name` and
  `metadata.generateName` only).

Out of reach offline: CEL cost estimation (the per-rule and per-CRD cost limits), the
server's full CEL type checker (overloads, int-or-string as dyn), RE2 versus Python regular
expressions, the Kubernetes JSONPath parser, and conversion/storage-version checks. Only a
real API server shows those.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any, Final

from tests.operator.cel import CelCompileError, compile_rule
from tests.operator.schema import Schema, cel_errors, schema_errors

OPENAPI_TYPES: Final = frozenset({"string", "number", "integer", "boolean", "array", "object"})
#: Allowed at the root of the schema when the status subresource is enabled.
ROOT_KEYWORDS: Final = frozenset(
    {
        "description", "type", "format", "title", "maximum", "exclusiveMaximum", "minimum",
        "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
        "uniqueItems", "multipleOf", "required", "items", "properties", "externalDocs",
        "example", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-validations",
    }
)  # fmt: skip
UNSUPPORTED: Final = {
    "$ref": "$ref is not supported",
    "definitions": "definitions is not supported",
    "dependencies": "dependencies is not supported",
    "patternProperties": "patternProperties is not supported",
    "additionalItems": "additionalItems is not supported",
    "id": "id is not supported",
}
#: Keywords a value validation (inside anyOf/allOf/oneOf/not) must not carry to be structural.
FORBIDDEN_IN_VALUE_VALIDATION: Final = (
    "type", "default", "title", "description", "nullable", "additionalProperties",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string", "x-kubernetes-list-map-keys", "x-kubernetes-list-type",
    "x-kubernetes-map-type", "x-kubernetes-validations",
)  # fmt: skip
INT_OR_STRING: Final = [{"type": "integer"}, {"type": "string"}]
PRINTER_TYPES: Final = frozenset({"integer", "number", "string", "boolean", "date"})
PRINTER_FORMATS: Final = frozenset(
    {"int32", "int64", "float", "double", "byte", "date", "date-time", "password"}
)
#: The JSON type a printer column type shows (date: an RFC 3339 string).
PRINTER_JSON_TYPES: Final = {
    "integer": {"integer"}, "number": {"number", "integer"}, "string": {"string"},
    "boolean": {"boolean"}, "date": {"string"},
}  # fmt: skip
#: `self.a.b` field selections in a rule (a trailing `(` marks a method such as size()).
_SELECTION = re.compile(r"\bself((?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*)+)(\s*\()?")


def _key(path: str, name: str) -> str:
    return f"{path}.properties[{name}]"


def _nodes(schema: Schema, path: str, level: str = "root") -> Iterator[tuple[Schema, str, str]]:
    """(node, path, level) for every structural node: properties, items, additionalProperties."""
    yield schema, path, level
    for name, prop in (schema.get("properties") or {}).items():
        if isinstance(prop, dict):
            yield from _nodes(prop, _key(path, name), "field")
    if isinstance(schema.get("items"), dict):
        yield from _nodes(schema["items"], f"{path}.items", "item")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}.additionalProperties", "field")


# -- structural schema --------------------------------------------------------------------


def _is_int_or_string(node: Schema) -> bool:
    if node.get("anyOf") == INT_OR_STRING:
        return True
    all_of = node.get("allOf") or []
    return bool(all_of) and isinstance(all_of[0], dict) and all_of[0].get("anyOf") == INT_OR_STRING


def _value_validation_errors(node: Any, path: str, nested: bool) -> list[str]:
    """anyOf/allOf/oneOf/not branches: value validations only, no structure of their own."""
    if not isinstance(node, dict):
        return [f"{path}: must be a schema object"]
    errors: list[str] = []
    if nested:
        errors.extend(
            f"{path}.{keyword}: Forbidden: must be empty to be structural"
            for keyword in FORBIDDEN_IN_VALUE_VALIDATION
            if keyword in node
        )
        if "metadata" in (node.get("properties") or {}):
            errors.append(
                f"{_key(path, 'metadata')}: Forbidden: must not be specified in a nested context"
            )
    for name, prop in (node.get("properties") or {}).items():
        errors += _value_validation_errors(prop, _key(path, name), True)
    if "items" in node:
        errors += _value_validation_errors(node["items"], f"{path}.items", True)
    for keyword in ("anyOf", "allOf", "oneOf"):
        for index, branch in enumerate(node.get(keyword) or []):
            errors += _value_validation_errors(branch, f"{path}.{keyword}[{index}]", True)
    if "not" in node:
        errors += _value_validation_errors(node["not"], f"{path}.not", True)
    return errors


def _completeness_errors(branch: Any, node: Schema, path: str, where: str) -> list[str]:
    """Every property a value validation names must exist in the structural schema."""
    if not isinstance(branch, dict):
        return []
    errors = []
    for name, sub in (branch.get("properties") or {}).items():
        target = (node.get("properties") or {}).get(name)
        if target is None:
            errors.append(
                f"{_key(path, name)}: Required value: because it is defined in {_key(where, name)}"
            )
        else:
            errors += _completeness_errors(sub, target, _key(path, name), _key(where, name))
    if isinstance(branch.get("items"), dict):
        if not isinstance(node.get("items"), dict):
            errors.append(f"{path}.items: Required value: because it is defined in {where}.items")
        else:
            errors += _completeness_errors(
                branch["items"], node["items"], f"{path}.items", f"{where}.items"
            )
    for keyword in ("anyOf", "allOf", "oneOf"):
        for index, sub in enumerate(branch.get(keyword) or []):
            errors += _completeness_errors(sub, node, path, f"{where}.{keyword}[{index}]")
    if "not" in branch:
        errors += _completeness_errors(branch["not"], node, path, f"{where}.not")
    return errors


def _root_metadata_errors(metadata: Schema, path: str) -> list[str]:
    errors = []
    if metadata.get("type") not in (None, "object"):
        errors.append(f"{path}.type: Invalid value: {metadata.get('type')!r}: must be object")
    rest = {k: v for k, v in metadata.items() if k not in ("type", "default")}
    properties = rest.pop("properties", None) or {}
    if set(properties) - {"name", "generateName"} or rest:
        errors.append(
            f"{path}: Forbidden: must not specify anything other than name and generateName, "
            "but metadata is implicitly specified"
        )
    return errors


def structural_errors(schema: Schema, path: str) -> list[str]:
    errors = []
    for node, where, level in _nodes(schema, path):
        int_or_string = bool(node.get("x-kubernetes-int-or-string"))
        preserve = node.get("x-kubernetes-preserve-unknown-fields")
        if "type" not in node and not int_or_string and not preserve:
            what = {
                "root": "must not be empty at the root",
                "item": "must not be empty for specified array items",
                "field": "must not be empty for specified object fields",
            }[level]
            errors.append(f"{where}.type: Required value: {what}")
        if "type" in node and node["type"] not in OPENAPI_TYPES:
            errors.append(f"{where}.type: Unsupported value: {node['type']!r}")
        if level == "root" and node.get("type", "object") != "object":
            errors.append(
                f"{where}.type: Invalid value: {node['type']!r}: must be object at the root"
            )
        if node.get("type") == "array" and "items" not in node:
            errors.append(f"{where}.items: Required value: must be specified")
        if isinstance(node.get("items"), list):
            errors.append(
                f"{where}.items: Forbidden: items must be a schema object and not an array"
            )
        if "additionalProperties" in node:
            if level == "root":
                errors.append(
                    f"{where}.additionalProperties: Forbidden: must not be used at the root"
                )
            if node.get("properties") and node["additionalProperties"] is not True:
                errors.append(
                    f"{where}.additionalProperties: Forbidden: additionalProperties and "
                    "properties are mutual exclusive"
                )
        if int_or_string and preserve:
            errors.append(
                f"{where}.x-kubernetes-preserve-unknown-fields: Invalid value: true: must be "
                "false if x-kubernetes-int-or-string is true"
            )
        if preserve is False:
            errors.append(
                f"{where}.x-kubernetes-preserve-unknown-fields: Invalid value: false: must be "
                "true or undefined"
            )
        for keyword, message in UNSUPPORTED.items():
            if keyword in node:
                errors.append(f"{where}.{keyword}: Forbidden: {message}")
        if node.get("uniqueItems"):
            errors.append(
                f"{where}.uniqueItems: Forbidden: uniqueItems cannot be set to true since the "
                "runtime complexity becomes quadratic"
            )
        if node.get("type") == "null":
            errors.append(f"{where}.type: Forbidden: type cannot be set to null, use nullable")
        if "pattern" in node:
            try:
                re.compile(node["pattern"])
            except re.error as error:
                errors.append(
                    f"{where}.pattern: Invalid value: must be a valid regular expression: {error}"
                )
        skip_any_of = _is_int_or_string(node)
        for keyword in ("anyOf", "allOf", "oneOf"):
            for index, branch in enumerate(node.get(keyword) or []):
                if keyword == "anyOf" and skip_any_of:
                    continue
                branch_path = f"{where}.{keyword}[{index}]"
                if keyword == "allOf" and index == 0 and skip_any_of:
                    branch = {k: v for k, v in branch.items() if k != "anyOf"}
                errors += _value_validation_errors(branch, branch_path, True)
                errors += _completeness_errors(branch, node, where, branch_path)
        if "not" in node:
            errors += _value_validation_errors(node["not"], f"{where}.not", True)
            errors += _completeness_errors(node["not"], node, where, f"{where}.not")
    properties = schema.get("properties") or {}
    if "metadata" in properties:
        errors += _root_metadata_errors(properties["metadata"], _key(path, "metadata"))
    for name in ("apiVersion", "kind"):
        if name in properties and properties[name].get("type") != "string":
            errors.append(f"{_key(path, name)}.type: Invalid value: must be string")
    for name in ("metadata", "apiVersion", "kind"):
        for node, where, _ in _nodes(properties.get(name) or {}, _key(path, name), "field"):
            if "default" in node:
                errors.append(f"{where}.default: Forbidden: must not be set in top-level {name}")
    return errors


def root_keyword_errors(schema: Schema, path: str, status_subresource: bool) -> list[str]:
    if not status_subresource:
        return []
    extra = sorted(set(schema) - ROOT_KEYWORDS)
    if extra:
        return [
            f"{path}: Invalid value: only {sorted(ROOT_KEYWORDS)} fields are allowed at the root "
            f"of the schema if the status subresource is enabled (found {extra})"
        ]
    return []


# -- list and map types -------------------------------------------------------------------


def list_type_errors(schema: Schema, path: str) -> list[str]:
    errors = []
    for node, where, _ in _nodes(schema, path):
        list_type = node.get("x-kubernetes-list-type")
        keys = node.get("x-kubernetes-list-map-keys") or []
        items = node.get("items") if isinstance(node.get("items"), dict) else None
        if "x-kubernetes-map-type" in node:
            if node.get("type") != "object":
                errors.append(f"{where}.type: must be object if x-kubernetes-map-type is specified")
            if node["x-kubernetes-map-type"] not in ("atomic", "granular"):
                errors.append(f"{where}.x-kubernetes-map-type: Unsupported value")
        if list_type is not None:
            if node.get("type") != "array":
                errors.append(f"{where}.type: must be array if x-kubernetes-list-type is specified")
            if list_type not in ("atomic", "set", "map"):
                errors.append(f"{where}.x-kubernetes-list-type: Unsupported value: {list_type!r}")
        if keys and list_type != "map":
            errors.append(
                f"{where}.x-kubernetes-list-type: must be map if x-kubernetes-list-map-keys is non-empty"
            )
        if list_type == "set" and items is not None:
            if items.get("type") == "object" and items.get("x-kubernetes-map-type") != "atomic":
                errors.append(
                    f"{where}.items.x-kubernetes-map-type: must be atomic as item of a list with "
                    "x-kubernetes-list-type=set"
                )
            if (
                items.get("type") == "array"
                and items.get("x-kubernetes-list-type", "atomic") != "atomic"
            ):
                errors.append(
                    f"{where}.items.x-kubernetes-list-type: must be atomic as item of a list "
                    "with x-kubernetes-list-type=set"
                )
        if list_type in ("set", "map") and items is not None and items.get("nullable"):
            errors.append(f"{where}.items.nullable: Forbidden: cannot be nullable")
        if list_type == "map":
            if not keys:
                errors.append(
                    f"{where}.x-kubernetes-list-map-keys: Required value: must not be empty if "
                    "x-kubernetes-list-type is map"
                )
            if items is None or items.get("type") != "object":
                errors.append(
                    f"{where}.items.type: must be object if parent array's x-kubernetes-list-type is map"
                )
                continue
            if len(set(keys)) != len(keys):
                errors.append(
                    f"{where}.x-kubernetes-list-map-keys: must not contain duplicate entries"
                )
            required = set(items.get("required") or [])
            for key in keys:
                prop = (items.get("properties") or {}).get(key)
                if prop is None:
                    errors.append(
                        f"{where}.x-kubernetes-list-map-keys: entries must all be names of item properties"
                    )
                    continue
                if prop.get("type") in ("array", "object"):
                    errors.append(f"{_key(where + '.items', key)}.type: must be a scalar type")
                if key not in required and "default" not in prop:
                    errors.append(
                        f"{_key(where + '.items', key)}.default: Required value: this property is "
                        "in x-kubernetes-list-map-keys, so it must have a default or be a "
                        "required property"
                    )
    return errors


# -- CEL rules ----------------------------------------------------------------------------


def _resolves(node: Schema, fields: list[str], at_root: bool) -> bool:
    """Whether `self.<fields>` names something the schema declares at `node`."""
    for index, name in enumerate(fields):
        if node.get("x-kubernetes-preserve-unknown-fields"):
            return True  # dyn: anything goes
        if at_root and index == 0 and name in ("apiVersion", "kind"):
            return len(fields) == 1
        if at_root and index == 0 and name == "metadata":
            return len(fields) == 1 or (len(fields) == 2 and fields[1] in ("name", "generateName"))
        properties = node.get("properties") or {}
        if name in properties:
            node = properties[name]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return False
    return True


def rule_errors(schema: Schema, path: str) -> list[str]:
    errors = []
    for node, where, level in _nodes(schema, path):
        for index, rule in enumerate(node.get("x-kubernetes-validations") or []):
            at = f"{where}.x-kubernetes-validations[{index}]"
            text = str(rule.get("rule", "")).strip()
            if not text:
                errors.append(f"{at}.rule: Required value: rule is not specified")
                continue
            message = rule.get("message")
            if message is not None and not str(message).strip():
                errors.append(f"{at}.message: Invalid value: must be non-empty if specified")
            if message is not None and "\n" in str(message):
                errors.append(f"{at}.message: Invalid value: must not contain line breaks")
            if message is None and "\n" in text:
                errors.append(
                    f"{at}.message: Required value: message must be specified if rule contains line breaks"
                )
            field_path = rule.get("fieldPath")
            if field_path is not None and not _resolves(
                node, [p for p in str(field_path).split(".") if p], at_root=False
            ):
                errors.append(
                    f"{at}.fieldPath: Invalid value: {field_path!r}: must be a valid path"
                )
            try:
                compile_rule(text)
            except CelCompileError as error:
                errors.append(f"{at}.rule: Invalid value: {error}")
                continue
            for match in _SELECTION.finditer(text):
                fields = [f.strip() for f in match.group(1).split(".") if f.strip()]
                if match.group(2):  # a method call: the last name is the method
                    fields = fields[:-1]
                if not _resolves(node, fields, at_root=level == "root"):
                    errors.append(
                        f"{at}.rule: Invalid value: compilation failed: undefined field "
                        f"'self.{'.'.join(fields)}' in {text}"
                    )
    return errors


# -- defaults (defaulting/validation.go) -------------------------------------------------


def _pruned(schema: Schema, value: Any) -> Any:
    """`value` without the fields `schema` does not know (pruning.Prune)."""
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"):
            return copy.deepcopy(value)
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            if key in properties:
                out[key] = _pruned(properties[key], item)
            elif isinstance(extra, dict):
                out[key] = _pruned(extra, item)
            elif extra is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                out[key] = copy.deepcopy(item)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_pruned(schema["items"], item) for item in value]
    return copy.deepcopy(value)


def default_errors(schema: Schema, path: str) -> list[str]:
    """Each default: pruned, schema-valid, and (only then) passing every CEL rule at its node
    and below, evaluated on the default as written. additionalProperties are not followed
    (defaults are forbidden there)."""
    errors = []

    def visit(node: Schema, where: str) -> None:
        if "default" in node:
            default = node["default"]
            at = f"{where}.default"
            if _pruned(node, default) != default:
                errors.append(f"{at}: Invalid value: must not have unknown fields")
            found = schema_errors(node, default, at)
            if found:
                errors.extend(message for message, _ in found)
            else:
                errors.extend(cel_errors(node, default, [at], old=default))
        for name, prop in (node.get("properties") or {}).items():
            visit(prop, _key(where, name))
        if isinstance(node.get("items"), dict):
            visit(node["items"], f"{where}.items")

    visit(schema, path)
    return errors


# -- printer columns ---------------------------------------------------------------------


#: What a CRD's schema leaves implicit: the ObjectMeta fields a printer column may show.
OBJECT_META: Final = {
    "type": "object",
    "properties": {
        name: {"type": "string"}
        for name in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp")
    }
    | {"generation": {"type": "integer"}},
}


def _field_at(schema: Schema, json_path: str) -> Schema | None:
    node: Schema | None = schema
    for index, name in enumerate(json_path.strip(".").split(".")):
        if node is None:
            return None
        if index == 0 and name == "metadata":
            node = OBJECT_META
            continue
        node = (node.get("properties") or {}).get(name)
    return node


def printer_column_errors(version: dict[str, Any], schema: Schema, path: str) -> list[str]:
    """The server's checks (type, format, a simple JSON path), and one it cannot make: the
    path names a field of the schema whose type the column can show (a typo shows nothing)."""
    errors = []
    for index, column in enumerate(version.get("additionalPrinterColumns") or []):
        at = f"{path}.additionalPrinterColumns[{index}]"
        if not column.get("name"):
            errors.append(f"{at}.name: Required value")
        if column.get("type") not in PRINTER_TYPES:
            errors.append(f"{at}.type: Unsupported value: {column.get('type')!r}")
        if "format" in column and column["format"] not in PRINTER_FORMATS:
            errors.append(f"{at}.format: Unsupported value: {column['format']!r}")
        json_path = str(column.get("jsonPath", ""))
        if not json_path.startswith("."):
            errors.append(
                f"{at}.JSONPath: Invalid value: must be a simple json path starting with ."
            )
            continue
        if not re.fullmatch(r"(\.[A-Za-z_][A-Za-z0-9_]*)+", json_path):
            errors.append(f"{at}.JSONPath: Invalid value: must be a json path in the dot notation")
            continue
        target = _field_at(schema, json_path)
        if target is None:
            errors.append(f"{at}.JSONPath: {json_path} names no field of the schema")
        elif target.get("x-kubernetes-int-or-string"):
            continue
        elif target.get("type") not in PRINTER_JSON_TYPES.get(str(column.get("type")), set()):
            errors.append(
                f"{at}.type: {column.get('type')} cannot show {json_path} ({target.get('type')})"
            )
    return errors


def scale_errors(version: dict[str, Any], schema: Schema, path: str) -> list[str]:
    """The server's checks of the scale subresource (each path simple, replicas under .spec /
    .status, the selector under either), and the ones it makes against the schema: the paths
    name fields, the replicas are integers and the selector a string (HPA reads it as text)."""
    scale = (version.get("subresources") or {}).get("scale")
    if scale is None:
        return []
    at = f"{path}.subresources.scale"
    errors = []
    wanted = (
        ("specReplicasPath", (".spec.",), "integer", True),
        ("statusReplicasPath", (".status.",), "integer", True),
        ("labelSelectorPath", (".spec.", ".status."), "string", False),
    )
    for key, prefixes, type_, required in wanted:
        json_path = scale.get(key)
        if json_path is None:
            if required:
                errors.append(f"{at}.{key}: Required value")
            continue
        if not re.fullmatch(r"(\.[A-Za-z_][A-Za-z0-9_]*)+", str(json_path)):
            errors.append(f"{at}.{key}: Invalid value: must be a simple json path")
            continue
        if not str(json_path).startswith(prefixes):
            errors.append(f"{at}.{key}: Invalid value: should be a json path under {prefixes}")
            continue
        target = _field_at(schema, str(json_path))
        if target is None:
            errors.append(f"{at}.{key}: Invalid value: {json_path} names no field of the schema")
        elif target.get("type") != type_:
            errors.append(
                f"{at}.{key}: Invalid value: {json_path} should be a field of type {type_}"
            )
    return errors


def crd_errors(crd: dict[str, Any]) -> list[str]:
    """What the API server would refuse in `crd` (empty: it would be accepted)."""
    errors = []
    for index, version in enumerate(crd["spec"]["versions"]):
        schema = version["schema"]["openAPIV3Schema"]
        # One version: the server reports paths under spec.validation (it hoists the schema).
        path = "spec.validation.openAPIV3Schema" if len(crd["spec"]["versions"]) == 1 else (
            f"spec.versions[{index}].schema.openAPIV3Schema"
        )  # fmt: skip
        structure = structural_errors(schema, path) + list_type_errors(schema, path)
        status = "status" in (version.get("subresources") or {})
        errors += structure + root_keyword_errors(schema, path, status)
        errors += rule_errors(schema, path)
        if not structure:  # as on the server: defaults are checked on structural schemas only
            errors += default_errors(schema, path)
        errors += printer_column_errors(version, schema, f"spec.versions[{index}]")
        errors += scale_errors(version, schema, f"spec.versions[{index}]")
    return errors
