"""Each engine's launch: the real command lines, and the simulators' with the same flags."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from pydantic import ValidationError

from switchyard.engines import ENGINES as KINDS
from switchyard.operator.api import ENGINES, Engine, ModelBackendSpec
from switchyard.operator.engines import engine_args, engine_launch
from switchyard.operator.settings import OperatorSettings
from tests.operator.harness import operator_settings

SETTINGS = operator_settings("models")


def spec(engine: Engine, **fields: Any) -> ModelBackendSpec:
    return ModelBackendSpec.model_validate({"engine": engine, "model": "org/model", **fields})


def test_vllm_command_line() -> None:
    launch = engine_launch(
        spec("vllm", maxModelLen=8192, resources={"gpus": 2}, parallelism={"tensor": 2}),
        "llama",
        SETTINGS,
    )
    assert launch.image == "vllm/vllm-openai:v0.33.0"
    assert launch.command == ["vllm", "serve"]
    assert launch.args == [
        "org/model", "--host", "0.0.0.0", "--port", "8000",
        "--served-model-name", "llama", "--tensor-parallel-size", "2",
        "--max-model-len", "8192",
    ]  # fmt: skip
    assert launch.port == 8000
    assert {"name": "HF_HOME", "value": "/models"} in launch.env


def test_sglang_command_line() -> None:
    launch = engine_launch(spec("sglang", maxModelLen=4096), "qwen", SETTINGS)
    assert launch.image == "lmsysorg/sglang:v0.5.23"
    assert launch.command == ["python3", "-m", "sglang.launch_server"]
    assert launch.args == [
        "--model-path", "org/model", "--host", "0.0.0.0", "--port", "30000",
        "--served-model-name", "qwen", "--tp-size", "1", "--enable-metrics",
        "--context-length", "4096",
    ]  # fmt: skip
    assert launch.port == 30000


def test_tgi_command_line() -> None:
    launch = engine_launch(spec("tgi", maxModelLen=8192), "mistral", SETTINGS)
    assert launch.image == "ghcr.io/huggingface/text-generation-inference:3.3.5"
    assert launch.command == ["text-generation-launcher"]
    assert launch.args == [
        "--model-id", "org/model", "--hostname", "0.0.0.0", "--port", "3000",
        "--num-shard", "1", "--max-input-tokens", "8191", "--max-total-tokens", "8192",
    ]  # fmt: skip
    assert launch.port == 3000


@pytest.mark.parametrize("engine", ENGINES)
def test_the_model_length_is_optional(engine: Engine) -> None:
    args = engine_args(spec(engine), "x")
    assert not {"--max-model-len", "--context-length", "--max-total-tokens"} & set(args)


@pytest.mark.parametrize("engine", ENGINES)
def test_user_flags_come_last(engine: Engine) -> None:
    args = engine_args(spec(engine, args=["--foo", "bar"]), "x")
    assert args[-2:] == ["--foo", "bar"]


@pytest.mark.parametrize("engine", ENGINES)
def test_simulators_take_the_same_flags_from_their_own_image(engine: Engine) -> None:
    real = engine_launch(spec(engine, maxModelLen=2048), "x", SETTINGS)
    sim = engine_launch(spec(engine, maxModelLen=2048, simulated=True), "x", SETTINGS)
    assert sim.image == "enginesim:test"
    assert sim.command[:3] == ["python", "-m", f"switchyard.enginesim.{engine}"]
    assert sim.args == real.args
    assert sim.port == real.port
    for probe in ("startup_probe", "readiness_probe", "liveness_probe"):
        assert getattr(sim, probe) == getattr(real, probe)
    assert all(e["name"] != "HF_HOME" for e in sim.env)


@pytest.mark.parametrize("engine", ENGINES)
def test_simulator_command_lines_parse(engine: Engine) -> None:
    """The simulators accept exactly the command line the operator gives them (each
    simulator's `flags.parse` reads what follows `python -m <module>`)."""
    key = {"name": "engine-key", "key": "token"}
    sim = engine_launch(
        spec(engine, maxModelLen=2048, simulated=True, apiKeySecret=key), "x", SETTINGS
    )
    flags = importlib.import_module(f"{sim.command[2]}.flags")
    flags.parse(sim.command[3:] + sim.args)


def test_probes_fit_each_engine() -> None:
    sglang = engine_launch(spec("sglang"), "x", SETTINGS)
    # /health generates a token (SGLang's own timeout is 20 s); /ready is a flag check.
    assert sglang.liveness_probe["httpGet"] == {"path": "/health", "port": "http"}
    assert sglang.liveness_probe["timeoutSeconds"] > 20
    assert sglang.readiness_probe["httpGet"]["path"] == "/ready"
    for engine in ("vllm", "tgi"):
        launch = engine_launch(spec(engine), "x", SETTINGS)
        assert launch.readiness_probe["httpGet"]["path"] == "/health"
        assert launch.liveness_probe["httpGet"]["path"] == "/health"


@pytest.mark.parametrize("engine", ENGINES)
def test_the_startup_probe_allows_the_configured_loading_time(engine: Engine) -> None:
    probe = engine_launch(spec(engine), "x", SETTINGS).startup_probe
    assert probe["periodSeconds"] * probe["failureThreshold"] >= SETTINGS.startup_timeout_s
    assert probe["httpGet"]["path"] == KINDS[engine].probes.startup


def test_image_override() -> None:
    assert engine_launch(spec("vllm", image="my/vllm:1"), "x", SETTINGS).image == "my/vllm:1"


def test_user_env_comes_after_the_operators() -> None:
    env = engine_launch(
        spec(
            "vllm",
            env=[{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        ),
        "x",
        SETTINGS,
    ).env
    assert env[-1] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}


def test_engine_images_from_the_settings_replace_the_pinned_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPERATOR_ENGINE_IMAGES", '{"sglang": "mirror/sglang:1"}')
    settings = OperatorSettings()
    assert engine_launch(spec("sglang"), "x", settings).image == "mirror/sglang:1"
    assert engine_launch(spec("tgi"), "x", settings).image == KINDS["tgi"].image
    assert engine_launch(spec("sglang", image="my/sglang:2"), "x", settings).image == "my/sglang:2"


def test_engine_images_only_for_known_engines() -> None:
    with pytest.raises(ValidationError, match="llamacpp"):
        OperatorSettings.model_validate({"engine_images": {"llamacpp": "x"}})
