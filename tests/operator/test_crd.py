"""The CRD: generated from the models, committed in the chart, and enforcing the same rules.

The committed YAML must equal the generator's output (run `python -m switchyard.operator
crd > charts/switchyard/crds/modelbackends.switchyard.dev.yaml` after changing `api.py`).
Its schema is checked the way the API server checks (defaults, strict fields, CEL rules run
by `tests.operator.cel`) and must agree with the pydantic models on every example and on a
corpus of invalid resources.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from switchyard.operator import api
from switchyard.operator.crd import CRD_PATH, crd_manifest, crd_yaml
from tests.operator.cases import INVALID
from tests.operator.cel import compile_rule, evaluate
from tests.operator.harness import EXAMPLES, backend, example
from tests.operator.schema import ROOT, committed_crd, defaulted, open_api_schema, validation_errors


def test_committed_crd_is_up_to_date() -> None:
    committed = (ROOT / CRD_PATH).read_text()
    assert committed == crd_yaml(), (
        f"{CRD_PATH} is stale: regenerate it with "
        f"`uv run python -m switchyard.operator crd > {CRD_PATH}`"
    )


def test_crd_identity() -> None:
    crd = committed_crd()
    assert crd["metadata"]["name"] == "modelbackends.switchyard.dev"
    spec = crd["spec"]
    assert spec["group"] == "switchyard.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "ModelBackend",
        "listKind": "ModelBackendList",
        "plural": "modelbackends",
        "singular": "modelbackend",
        "shortNames": ["mb"],
        "categories": ["switchyard"],
    }
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Engine"] == ".spec.engine"
    assert columns["Model"] == ".spec.model"
    assert columns["Ready"] == ".status.readyReplicas"
    assert columns["Desired"] == ".status.desiredReplicas"
    assert columns["Warm"] == ".status.warmReplicas"
    assert columns["Phase"] == ".status.phase"
    assert columns["Age"] == ".metadata.creationTimestamp"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.get("properties", {}).items():
            out += _walk(value, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            out += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_schema_is_structural() -> None:
    """What the API server refuses in a structural schema is absent."""
    for path, node in _walk(open_api_schema()):
        assert "$ref" not in node, path
        assert "title" not in node, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("default", 0) is not None, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), path
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path


def test_schema_has_defaults_enums_and_minimums() -> None:
    spec = open_api_schema()["properties"]["spec"]
    props = spec["properties"]
    assert spec["required"] == ["engine", "model"]
    assert props["engine"]["enum"] == ["vllm", "sglang", "tgi"]
    gpus = props["resources"]["properties"]["gpus"]
    assert (gpus["minimum"], gpus["default"]) == (0, 1)
    scaling = props["scaling"]["properties"]
    assert scaling["minReplicas"]["minimum"] == 0
    assert scaling["maxReplicas"]["minimum"] == 1
    assert scaling["scaleDownDelaySeconds"]["default"] == 300
    assert props["scaling"]["default"] == {}
    status = open_api_schema()["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == list(api.PHASES)


def test_cel_rules_are_the_models_rules() -> None:
    """Every rule in the CRD is one of api.ALL_RULES, and each of those is in the CRD."""
    in_crd = {
        (rule["rule"], rule["message"])
        for _, node in _walk(open_api_schema())
        for rule in node.get("x-kubernetes-validations", ())
    }
    in_models = {(r.cel, r.message) for rules in api.ALL_RULES.values() for r in rules}
    assert in_crd == in_models
    for rule, _ in in_crd:
        compile_rule(rule)  # within the subset our evaluator knows (else SyntaxError)


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_validate_against_the_crd(name: str) -> None:
    assert validation_errors(example(name)) == []


def _with_name(raw: dict[str, Any]) -> dict[str, Any]:
    return backend("llama", raw)


@pytest.mark.parametrize(("raw", "message"), INVALID)
def test_crd_and_models_reject_the_same_specs(raw: dict[str, Any], message: str) -> None:
    errors = validation_errors(_with_name(raw))
    assert errors, "the CRD accepted it"
    with pytest.raises(ValidationError):
        api.ModelBackendSpec.model_validate(raw)
    rule_messages = {r.message for rules in api.ALL_RULES.values() for r in rules}
    if any(message in m for m in rule_messages):  # a CEL rule's message: the same words
        assert any(message in error for error in errors), errors


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"engine": "llamacpp", "model": "m"},
            "spec.engine: 'llamacpp' is not one of ['vllm', 'sglang', 'tgi']",
        ),
        ({"engine": "vllm"}, "spec: 'model' is a required property"),
        (
            {"engine": "vllm", "model": "m", "resources": {"gpus": -1}},
            "spec.resources.gpus: -1 is less than the minimum of 0",
        ),
        (
            {"engine": "vllm", "model": "m", "scaling": {"minReplicas": 3, "maxReplicas": 2}},
            "spec.scaling: minReplicas must not exceed maxReplicas",
        ),
    ],
)
def test_rejections_say_what_is_wrong(raw: dict[str, Any], expected: str) -> None:
    assert expected in validation_errors(_with_name(raw))


def test_cel_rules_agree_with_the_models_on_edge_cases() -> None:
    for low, high, warm in [(0, 1, 0), (1, 1, 1), (2, 1, 0), (0, 3, 4), (3, 3, 3)]:
        value = defaulted(
            _with_name(
                {
                    "engine": "vllm",
                    "model": "m",
                    "scaling": {"minReplicas": low, "maxReplicas": high, "warmReplicas": warm},
                }
            )
        )["spec"]["scaling"]
        for rule in api.SCALING_RULES:
            model_ok = rule.check(
                api.Scaling.model_construct(min_replicas=low, max_replicas=high, warm_replicas=warm)
            )
            assert evaluate(rule.cel, value) == model_ok, (rule.cel, value)


def test_name_rule_runs_on_metadata() -> None:
    assert validation_errors(_with_name({"engine": "vllm", "model": "m"})) == []
    errors = validation_errors(backend("8b", {"engine": "vllm", "model": "m"}))
    assert any("DNS-1035" in e for e in errors), errors


@pytest.mark.parametrize("name", EXAMPLES)
def test_server_defaults_and_model_defaults_agree(name: str) -> None:
    """The operator reads the same spec whether or not the API server filled the defaults."""
    raw = example(name)
    assert api.ModelBackend.model_validate(
        defaulted(copy.deepcopy(raw))
    ) == api.ModelBackend.model_validate(raw)


def test_generated_manifest_is_what_is_committed() -> None:
    assert committed_crd() == crd_manifest()
