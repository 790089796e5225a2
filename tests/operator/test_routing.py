"""spec.routing: the edge's routing policy for a backend, in the models and the committed CRD."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from switchyard.edge.routing.table import POLICIES
from switchyard.operator import api
from tests.operator.harness import backend
from tests.operator.schema import defaulted, open_api_schema, validation_errors

BASE = {"engine": "vllm", "model": "m"}


def test_the_crd_enumerates_the_policies_the_edge_knows() -> None:
    routing = open_api_schema()["properties"]["spec"]["properties"]["routing"]
    policy = routing["properties"]["policy"]
    assert policy["enum"] == list(POLICIES)
    assert policy["default"] == "load"
    assert "default" not in routing  # unset stays unset: no change to existing objects


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_is_accepted(policy: str) -> None:
    raw = backend("llama", {**BASE, "routing": {"policy": policy}})
    assert validation_errors(raw) == []
    assert api.ModelBackend.model_validate(raw).spec.routing == api.Routing(policy=policy)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("routing", "expected"),
    [
        ({"policy": "nearest"}, "spec.routing.policy: 'nearest' is not one of"),
        ({"policy": "prefix", "blocks": 4}, "blocks"),
    ],
)
def test_the_crd_and_the_model_refuse_the_same_routing(
    routing: dict[str, object], expected: str
) -> None:
    raw = backend("llama", {**BASE, "routing": routing})
    errors = validation_errors(raw)
    assert any(expected in e for e in errors), errors
    with pytest.raises(ValidationError):
        api.ModelBackend.model_validate(raw)


def test_the_server_defaults_an_empty_routing_to_load_as_the_model_does() -> None:
    raw = backend("llama", {**BASE, "routing": {}})
    assert defaulted(raw)["spec"]["routing"] == {"policy": "load"}
    assert api.ModelBackend.model_validate(raw).spec.routing == api.Routing(policy="load")
    assert api.ModelBackend.model_validate(backend("llama", BASE)).spec.routing is None
