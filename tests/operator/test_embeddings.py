"""spec.task embed: each engine's flags for an embedding model (and Matryoshka vectors), and
what is refused: an embedding model on TGI, generation-only chat options, `embedding`
without `task: embed`."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
from lightkube import ApiError, AsyncClient
from pydantic import ValidationError

from switchyard.operator.api import ModelBackendSpec
from switchyard.operator.engines import engine_args, engine_launch
from tests.operator.apiserver import BACKENDS, ApiServer
from tests.operator.harness import NAMESPACE, OperatorThread, backend, operator_settings
from tests.operator.steps import create, deployment_when, patch_spec

SETTINGS = operator_settings(NAMESPACE)
#: The engines that serve embeddings, and the flags that start a model as one.
EMBEDDING_FLAGS = {
    "vllm": ["--runner", "pooling", "--convert", "embed"],
    "sglang": ["--is-embedding"],
}
#: The flag that overrides the model's HF config, where the engines read `is_matryoshka`.
CONFIG_OVERRIDE = {"vllm": "--hf-overrides", "sglang": "--json-model-override-args"}


def spec(engine: str, **fields: Any) -> ModelBackendSpec:
    return ModelBackendSpec.model_validate({"engine": engine, "model": "org/model", **fields})


def added(engine: str, **fields: Any) -> list[str]:
    """The flags `fields` add to a plain backend's, in their order."""
    plain = engine_args(spec(engine), "m")
    return [arg for arg in engine_args(spec(engine, **fields), "m") if arg not in plain]


def engine_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (engine,) = [c for c in containers if c["name"] == "engine"]
    return dict(engine)


@pytest.mark.parametrize("engine", EMBEDDING_FLAGS)
def test_an_embedding_model_is_started_with_its_engine_s_flags(engine: str) -> None:
    assert added(engine, task="embed") == EMBEDDING_FLAGS[engine]
    assert added(engine, task="embed", embedding={}) == EMBEDDING_FLAGS[engine]
    assert added(engine, task="generate") == []


@pytest.mark.parametrize(
    ("embedding", "config"),
    [
        ({"matryoshka": True}, {"is_matryoshka": True}),
        ({"matryoshkaDimensions": [256, 64]}, {"matryoshka_dimensions": [256, 64]}),
        ({"matryoshka": True, "matryoshkaDimensions": [64]}, {"matryoshka_dimensions": [64]}),
    ],
)
@pytest.mark.parametrize("engine", EMBEDDING_FLAGS)
def test_matryoshka_vectors_are_said_in_the_model_s_config(
    engine: str, embedding: dict[str, Any], config: dict[str, Any]
) -> None:
    flags = added(engine, task="embed", embedding=embedding)
    assert flags[: len(EMBEDDING_FLAGS[engine])] == EMBEDDING_FLAGS[engine]
    override, value = flags[len(EMBEDDING_FLAGS[engine]) :]
    assert override == CONFIG_OVERRIDE[engine]
    assert json.loads(value) == config


def test_without_matryoshka_the_model_s_config_is_left_alone() -> None:
    for engine, override in CONFIG_OVERRIDE.items():
        args = engine_args(spec(engine, task="embed", embedding={"matryoshka": False}), "m")
        assert override not in args


def test_an_embedding_model_on_tgi_is_refused() -> None:
    with pytest.raises(ValidationError, match="task embed is not for engine tgi: TGI serves no"):
        spec("tgi", task="embed")


@pytest.mark.parametrize(
    "chat", [{"toolCallParser": "hermes"}, {"reasoningParser": "qwen3"}, {"maxTopLogprobs": 3}]
)
def test_what_shapes_generated_text_is_refused_on_an_embedding_model(chat: dict[str, Any]) -> None:
    (field,) = chat
    with pytest.raises(ValidationError, match=rf"chat\.{field} is not for an embedding model"):
        spec("vllm", task="embed", chat=chat)
    spec("vllm", chat=chat)  # fine on a generative one


def test_a_template_and_images_are_kept_on_an_embedding_model() -> None:
    """vLLM embeds chat messages (through the template) and images on multimodal models."""
    template = {"configMapRef": {"name": "t", "key": "t.jinja"}}
    args = engine_args(
        spec("vllm", task="embed", chat={"chatTemplate": template, "maxImagesPerPrompt": 1}), "m"
    )
    assert "--chat-template" in args
    assert "--limit-mm-per-prompt" in args


def test_embedding_settings_without_task_embed_are_refused() -> None:
    with pytest.raises(ValidationError, match="embedding is for an embedding model: set task"):
        spec("vllm", embedding={"matryoshka": True})


@pytest.mark.parametrize("engine", EMBEDDING_FLAGS)
def test_the_simulators_take_the_embedding_flags(engine: str) -> None:
    """Each simulator parses what the operator runs a simulated embedding backend with."""
    raw = {"simulated": True, "task": "embed", "embedding": {"matryoshkaDimensions": [64, 128]}}
    launch = engine_launch(spec(engine, **raw), "demo", SETTINGS)
    flags = importlib.import_module(f"{launch.command[2]}.flags")
    flags.parse(launch.command[3:] + launch.args)


# -- through the API server and the operator ----------------------------------------------


@pytest.mark.parametrize("engine", EMBEDDING_FLAGS)
async def test_the_deployment_runs_the_engine_as_an_embedding_model(
    engine: str, api: ApiServer, client: AsyncClient, operator: OperatorThread
) -> None:
    raw = {"engine": engine, "model": "org/embed", "task": "embed",
           "embedding": {"matryoshka": True}}  # fmt: skip
    await create(client, backend("embed", raw))
    deployment = await deployment_when(api, "embed", lambda d: True, "the Deployment")
    args = engine_container(deployment)["args"]
    assert all(flag in args for flag in EMBEDDING_FLAGS[engine])
    override = args[args.index(CONFIG_OVERRIDE[engine]) + 1]
    assert json.loads(override) == {"is_matryoshka": True}


async def test_turning_a_backend_into_an_embedding_model_rolls_its_pods(
    api: ApiServer, client: AsyncClient, operator: OperatorThread
) -> None:
    await create(client, backend("embed", {"engine": "sglang", "model": "m", "simulated": True}))
    first = await deployment_when(api, "embed", lambda d: True, "the Deployment")
    assert "--is-embedding" not in engine_container(first)["args"]
    await patch_spec(client, "embed", {"task": "embed"})
    await deployment_when(
        api, "embed", lambda d: "--is-embedding" in engine_container(d)["args"], "rolled out"
    )


async def test_the_api_refuses_an_embedding_model_on_tgi(
    api: ApiServer, client: AsyncClient
) -> None:
    with pytest.raises(ApiError) as caught:
        await create(client, backend("bad", {"engine": "tgi", "model": "m", "task": "embed"}))
    assert caught.value.status.code == 422
    assert "task embed is not for engine tgi" in (caught.value.status.message or "")
    assert api.live(BACKENDS) == []
