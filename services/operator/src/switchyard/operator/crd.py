"""The ModelBackend CustomResourceDefinition, generated from the pydantic models in `api.py`.

pydantic writes JSON Schema (2020-12, with `$ref`s and `anyOf: [..., null]` for optional
fields); the API server wants a structural OpenAPI v3 schema. `structural()` converts one to
the other: references inlined, optional fields made plain optional properties, titles and
`additionalProperties: false` dropped (not allowed next to `properties`), free-form objects
marked `x-kubernetes-preserve-unknown-fields`. The committed YAML in the chart is this
module's output; a test fails when the two drift (`python -m switchyard.operator crd`).
"""

from __future__ import annotations

from typing import Any, Final

import yaml

from switchyard.operator import api

CRD_NAME: Final = f"{api.PLURAL}.{api.GROUP}"
#: Where the chart keeps the generated CRD (relative to the repository root).
CRD_PATH: Final = f"charts/switchyard/crds/{CRD_NAME}.yaml"

#: `kubectl scale`, HPA and KEDA write spec.scaling.replicas through /scale (it takes effect in
#: mode: external only: CEL refuses it in mode: operator); they read the pods back from status.
SCALE_SUBRESOURCE: Final = {
    "specReplicasPath": ".spec.scaling.replicas",
    "statusReplicasPath": ".status.replicas",
    "labelSelectorPath": ".status.selector",
}

PRINTER_COLUMNS: Final = (
    {"name": "Engine", "type": "string", "jsonPath": ".spec.engine"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
    {
        "name": "Ready",
        "type": "integer",
        "jsonPath": ".status.readyReplicas",
        "description": "Replicas serving",
    },
    {
        "name": "Desired",
        "type": "integer",
        "jsonPath": ".status.desiredReplicas",
        "description": "Replicas asked for",
    },
    {
        "name": "Warm",
        "type": "integer",
        "jsonPath": ".status.warmReplicas",
        "description": "Ready replicas beyond current demand",
    },
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Served", "type": "string", "jsonPath": ".status.servedModelName", "priority": 1},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
    {"name": "Simulated", "type": "boolean", "jsonPath": ".spec.simulated", "priority": 1},
)


def structural(node: Any, defs: dict[str, Any]) -> Any:
    """A pydantic JSON Schema node as a structural OpenAPI v3 schema node."""
    if isinstance(node, list):
        return [structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        node = {**structural(defs[ref.rsplit("/", 1)[-1]], defs), **node}
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1 or len(branches) == len(node["anyOf"]):
            raise ValueError(f"unions other than optional ones have no structural form: {node}")
        rest = {key: value for key, value in node.items() if key != "anyOf"}
        node = {**structural(branches[0], defs), **rest}
    if "default" in node and node["default"] is None:
        del node["default"]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        if key == "description":
            out[key] = " ".join(str(value).split())
        elif key == "properties":
            out[key] = {name: structural(prop, defs) for name, prop in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = structural(value, defs)
        else:
            out[key] = value
    return out


def open_api_schema() -> dict[str, Any]:
    """The CRD's `openAPIV3Schema`."""
    raw = api.ModelBackend.model_json_schema(by_alias=True)
    root: dict[str, Any] = structural(raw, raw.get("$defs", {}))
    properties = root["properties"]
    # The API server owns these; a CRD may not constrain metadata beyond name.
    properties["apiVersion"] = {"type": "string"}
    properties["kind"] = {"type": "string"}
    properties["metadata"] = {"type": "object"}
    root["required"] = ["spec"]
    return root


def crd_manifest() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "switchyard",
                "app.kubernetes.io/part-of": "switchyard",
                "app.kubernetes.io/component": "operator",
            },
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["switchyard"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}, "scale": dict(SCALE_SUBRESOURCE)},
                    "additionalPrinterColumns": [dict(c) for c in PRINTER_COLUMNS],
                    "schema": {"openAPIV3Schema": open_api_schema()},
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = (
        "# Generated by `python -m switchyard.operator crd` from "
        "services/operator/src/switchyard/operator/api.py.\n"
        "# Do not edit by hand: change the models and regenerate (make crd).\n"
    )
    return header + yaml.safe_dump(crd_manifest(), sort_keys=False, width=100)
