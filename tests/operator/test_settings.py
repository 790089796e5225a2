"""Operator settings from OPERATOR_* variables."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from switchyard.operator.settings import OperatorSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = OperatorSettings()
    assert settings.namespaces == []
    assert settings.served_namespaces == []
    assert settings.adapter_image("vllm") == f"adapter-vllm:{settings.image_tag}"
    assert settings.enginesim_image() == f"enginesim:{settings.image_tag}"
    assert settings.engine_image("tgi").startswith("ghcr.io/huggingface/text-generation-inference:")
    assert settings.liveness_port == 8080
    assert settings.peering is None


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPERATOR_NAMESPACES", "models, team-a")
    monkeypatch.setenv("OPERATOR_ADAPTER_IMAGE_PREFIX", "ghcr.io/acme/")
    monkeypatch.setenv("OPERATOR_IMAGE_TAG", "1.2.3")
    monkeypatch.setenv("OPERATOR_ADAPTER_IMAGES", '{"tgi": "local/adapter-tgi:dev"}')
    monkeypatch.setenv(
        "OPERATOR_ADAPTER_ENV", '{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317"}'
    )
    monkeypatch.setenv("OPERATOR_SCALE_INTERVAL_S", "2.5")
    monkeypatch.setenv("OPERATOR_SERVED_NAMESPACES", "models")
    settings = OperatorSettings()
    assert settings.namespaces == ["models", "team-a"]
    assert settings.served_namespaces == ["models"]
    assert settings.adapter_image("vllm") == "ghcr.io/acme/adapter-vllm:1.2.3"
    assert settings.adapter_image("tgi") == "local/adapter-tgi:dev"
    assert settings.enginesim_image() == "ghcr.io/acme/enginesim:1.2.3"
    assert settings.adapter_env == {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317"}
    assert settings.scale_interval_s == 2.5


@pytest.mark.parametrize(
    "values",
    [
        {"namespaces": ["team-*"]},
        {"drain_s": 2, "drain_delay_s": 3},
        {"adapter_env": {"ADAPTER_SHUTDOWN_GRACE_S": "600"}},
        {"scale_interval_s": 0},
        {"image_pull_policy": "Sometimes"},
        {"adapter_images": {"llamacpp": "x"}},
    ],
)
def test_bad_values_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        OperatorSettings.model_validate(values)
