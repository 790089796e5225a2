"""The ModelBackend models: defaults, validation rules and their messages."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from switchyard.operator.api import ModelBackend, ModelBackendSpec
from tests.operator.cases import INVALID, spec
from tests.operator.harness import EXAMPLES, backend, example


def test_defaults_fill_a_minimal_spec() -> None:
    parsed = ModelBackendSpec.model_validate(spec())
    assert parsed.resources.gpus == 1
    assert parsed.resources.gpu_resource == "nvidia.com/gpu"
    assert parsed.parallelism.tensor == 1
    assert parsed.scaling.min_replicas == 1
    assert parsed.scaling.max_replicas == 1
    assert parsed.scaling.warm_replicas == 0
    assert parsed.scaling.target_in_flight_per_replica == 32
    assert parsed.scaling.scale_down_delay_seconds == 300
    assert parsed.simulated is False
    assert parsed.shm_size == "2Gi"
    assert parsed.effective_served_name("llama") == "llama"
    assert (
        ModelBackendSpec.model_validate(spec(servedModelName="x")).effective_served_name("llama")
        == "x"
    )


def test_quantities_accept_yaml_integers() -> None:
    parsed = ModelBackendSpec.model_validate(spec(resources={"cpu": 8, "memory": "48Gi"}))
    assert parsed.resources.cpu == "8"
    assert parsed.resources.memory == "48Gi"


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_are_valid(name: str) -> None:
    ModelBackend.model_validate(example(name))


@pytest.mark.parametrize(("raw", "message"), INVALID)
def test_invalid_specs_are_rejected_with_a_clear_message(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ModelBackendSpec.model_validate(raw)
    text = str(caught.value)
    assert message in text or message.replace(".", "\n  ") in text, text


def test_tensor_parallel_beyond_gpus_is_fine_when_simulated_or_without_gpus() -> None:
    ModelBackendSpec.model_validate(spec(simulated=True, parallelism={"tensor": 4}))
    ModelBackendSpec.model_validate(spec(resources={"gpus": 0}, parallelism={"tensor": 2}))


@pytest.mark.parametrize("name", ["8b-llama", "Llama", "a" * 56, "llama_8b", "llama-"])
def test_names_that_cannot_name_the_adapter_service_are_rejected(name: str) -> None:
    with pytest.raises(ValidationError, match="DNS-1035"):
        ModelBackend.model_validate(backend(name, spec()))


def test_a_name_of_55_characters_is_fine() -> None:
    ModelBackend.model_validate(backend("a" * 55, spec()))
