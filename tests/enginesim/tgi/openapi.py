"""Validation against TGI's own OpenAPI document (`data/tgi-openapi.json`, vendored).

OpenAPI 3.0 marks optional-null values with `nullable: true`, which JSON Schema does not
know: each such schema becomes `anyOf: [schema, {"type": "null"}]`. References stay
`#/components/schemas/...`, resolved inside the same document.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema.validators import Draft202012Validator

#: TGI's `docs/openapi.json` (see data/README.md for its provenance).
SPEC_PATH = Path(__file__).with_name("data") / "tgi-openapi.json"


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k in ("example", "default") else _convert(v)) for k, v in node.items()}
    if out.pop("nullable", False):
        return {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def _components() -> dict[str, Any]:
    spec = json.loads(SPEC_PATH.read_text())
    return {"components": _convert(spec["components"])}


def validator(name: str) -> Draft202012Validator:
    """A validator for `components.schemas.<name>`."""
    return Draft202012Validator({**_components(), "$ref": f"#/components/schemas/{name}"})


def check(name: str, instance: Any) -> None:
    """Raise ValidationError unless `instance` is a valid `name`."""
    validator(name).validate(instance)
