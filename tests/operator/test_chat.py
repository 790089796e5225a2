"""spec.chat: the flags each engine gets for tools, reasoning, a chat template, images and
log probabilities, the template mounted from its ConfigMap, and what each engine refuses."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
from lightkube import ApiError, AsyncClient
from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from switchyard.engines import CHAT_OPTIONS, ENGINES
from switchyard.operator.api import Chat, ModelBackendSpec
from switchyard.operator.children import render
from switchyard.operator.engines import engine_args, engine_launch
from tests.operator.apiserver import BACKENDS, ApiServer
from tests.operator.harness import (
    EXAMPLES,
    NAMESPACE,
    OperatorThread,
    backend,
    example,
    operator_settings,
)
from tests.operator.steps import create, deployment_when, patch_spec

SETTINGS = operator_settings(NAMESPACE)
TEMPLATE = {"configMapRef": {"name": "tool-template", "key": "chat.jinja"}}
TEMPLATE_PATH = "/etc/switchyard/chat-template/template.jinja"
#: Every field of spec.chat each engine takes, and the flags they become (after the others).
FULL_CHAT: dict[str, tuple[dict[str, Any], list[str]]] = {
    "vllm": (
        {"toolCallParser": "hermes", "reasoningParser": "qwen3", "chatTemplate": TEMPLATE,
         "maxImagesPerPrompt": 3, "maxTopLogprobs": 8},
        ["--enable-auto-tool-choice", "--tool-call-parser", "hermes",
         "--reasoning-parser", "qwen3", "--chat-template", TEMPLATE_PATH,
         "--limit-mm-per-prompt", '{"image":3}', "--max-logprobs", "8"],
    ),
    "sglang": (
        {"toolCallParser": "qwen", "reasoningParser": "qwen3", "chatTemplate": TEMPLATE,
         "maxImagesPerPrompt": 3},
        ["--tool-call-parser", "qwen", "--reasoning-parser", "qwen3",
         "--chat-template", TEMPLATE_PATH, "--limit-mm-data-per-request", '{"image":3}'],
    ),
    "tgi": ({"maxTopLogprobs": 8}, ["--max-top-n-tokens", "8"]),
}  # fmt: skip


#: A value for each chat option.
CHAT_VALUES: dict[str, Any] = {
    "tool_call_parser": "hermes",
    "reasoning_parser": "qwen3",
    "chat_template": TEMPLATE,
    "max_images_per_prompt": 1,
    "max_top_logprobs": 5,
}


def spec(engine: str, **fields: Any) -> ModelBackendSpec:
    return ModelBackendSpec.model_validate({"engine": engine, "model": "org/model", **fields})


def engine_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (engine,) = [c for c in containers if c["name"] == "engine"]
    return dict(engine)


def test_the_chat_group_sets_the_registry_s_chat_options() -> None:
    assert tuple(Chat.model_fields) == CHAT_OPTIONS


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_gets_its_own_flags_after_the_others(engine: str) -> None:
    chat, flags = FULL_CHAT[engine]
    plain = engine_args(spec(engine), "m")
    args = engine_args(spec(engine, chat=chat), "m")
    assert args == plain + flags


@pytest.mark.parametrize("engine", ENGINES)
def test_an_empty_chat_group_changes_nothing(engine: str) -> None:
    assert engine_args(spec(engine, chat={}), "m") == engine_args(spec(engine), "m")


def test_the_image_limit_is_the_json_object_the_engines_parse() -> None:
    args = engine_args(spec("vllm", chat={"maxImagesPerPrompt": 0}), "m")
    # 0 is a limit (a multimodal model served text-only), not "unset".
    assert json.loads(args[args.index("--limit-mm-per-prompt") + 1]) == {"image": 0}


@pytest.mark.parametrize(("images", "multimodal"), [(None, False), (0, False), (2, True)])
@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_a_simulated_backend_takes_images_when_it_allows_some(
    engine: str, images: int | None, multimodal: bool
) -> None:
    chat = {} if images is None else {"maxImagesPerPrompt": images}
    simulated = engine_args(spec(engine, simulated=True, chat=chat, args=["--x"]), "m")
    assert ("--sim-multimodal" in simulated) is multimodal
    assert simulated[-1] == "--x"  # the user's flags still come last
    assert "--sim-multimodal" not in engine_args(spec(engine, chat=chat), "m")


@pytest.mark.parametrize("simulated", [False, True])
def test_a_chat_template_is_mounted_read_only_from_its_config_map(simulated: bool) -> None:
    objs = render("m", NAMESPACE, spec("vllm", simulated=simulated, chat={"chatTemplate": TEMPLATE}),
                  SETTINGS, 1)  # fmt: skip
    pod = objs.deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "chat-template"]
    assert volume == {
        "name": "chat-template",
        "configMap": {"name": "tool-template", "items": [{"key": "chat.jinja", "path": "template.jinja"}]},
    }  # fmt: skip
    engine, adapter = pod["containers"]
    (mount,) = [m for m in engine["volumeMounts"] if m["name"] == "chat-template"]
    assert mount == {"name": "chat-template", "mountPath": "/etc/switchyard/chat-template",
                     "readOnly": True}  # fmt: skip
    assert f"{mount['mountPath']}/{volume['configMap']['items'][0]['path']}" == TEMPLATE_PATH
    assert engine["args"][engine["args"].index("--chat-template") + 1] == TEMPLATE_PATH
    assert all(m["name"] != "chat-template" for m in adapter["volumeMounts"])


def test_without_a_template_there_is_no_template_volume() -> None:
    objs = render("m", NAMESPACE, spec("vllm", chat={"toolCallParser": "hermes"}), SETTINGS, 1)
    pod = objs.deployment["spec"]["template"]["spec"]
    assert all(v["name"] != "chat-template" for v in pod["volumes"])
    assert "--chat-template" not in pod["containers"][0]["args"]


@pytest.mark.parametrize(
    ("engine", "option"),
    [(k.name, o) for k in ENGINES.values() for o in k.unsupported],
)
def test_what_an_engine_has_no_flag_for_is_refused_not_dropped(engine: str, option: str) -> None:
    field = to_camel(option)
    with pytest.raises(ValidationError, match=rf"chat\.{field} is not for engine {engine}: "):
        spec(engine, chat={field: CHAT_VALUES[option]})
    for other in ENGINES:
        if option not in ENGINES[other].unsupported:
            spec(other, chat={field: CHAT_VALUES[option]})


# -- through the API server and the operator ----------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
async def test_the_deployment_runs_the_engine_with_the_chat_flags_and_the_template(
    engine: str, api: ApiServer, client: AsyncClient, operator: OperatorThread
) -> None:
    chat, flags = FULL_CHAT[engine]
    await create(client, backend("chat", {"engine": engine, "model": "org/model", "chat": chat}))
    deployment = await deployment_when(api, "chat", lambda d: True, "the Deployment")
    container = engine_container(deployment)
    assert container["args"][-len(flags) :] == flags
    mounted = [m for m in container["volumeMounts"] if m["name"] == "chat-template"]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    if "chatTemplate" in chat:
        assert mounted == [{"name": "chat-template", "mountPath": "/etc/switchyard/chat-template",
                            "readOnly": True}]  # fmt: skip
        assert {"name": "chat-template", "configMap": {"name": "tool-template", "items": [
            {"key": "chat.jinja", "path": "template.jinja"}]}} in volumes  # fmt: skip
    else:
        assert mounted == []


async def test_adding_a_tool_parser_rolls_the_pods_with_the_new_flags(
    api: ApiServer, client: AsyncClient, operator: OperatorThread
) -> None:
    await create(client, backend("chat", {"engine": "sglang", "model": "m", "simulated": True}))
    first = await deployment_when(api, "chat", lambda d: True, "the Deployment")
    assert "--tool-call-parser" not in engine_container(first)["args"]
    await patch_spec(client, "chat", {"chat": {"toolCallParser": "qwen", "maxImagesPerPrompt": 2}})
    rolled = await deployment_when(
        api, "chat", lambda d: "--tool-call-parser" in engine_container(d)["args"], "rolled out"
    )
    args = engine_container(rolled)["args"]
    assert args[args.index("--tool-call-parser") + 1] == "qwen"
    assert "--sim-multimodal" in args


@pytest.mark.parametrize(
    ("chat", "message"),
    [
        ({"toolCallParser": "hermes"}, "chat.toolCallParser is not for engine tgi"),
        ({"reasoningParser": "qwen3"}, "chat.reasoningParser is not for engine tgi"),
        ({"chatTemplate": TEMPLATE}, "chat.chatTemplate is not for engine tgi"),
        ({"maxImagesPerPrompt": 2}, "chat.maxImagesPerPrompt is not for engine tgi"),
    ],
)
async def test_the_api_refuses_what_tgi_cannot_do(
    chat: dict[str, Any], message: str, api: ApiServer, client: AsyncClient
) -> None:
    with pytest.raises(ApiError) as caught:
        await create(client, backend("bad", {"engine": "tgi", "model": "m", "chat": chat}))
    assert caught.value.status.code == 422
    assert message in (caught.value.status.message or "")
    assert api.live(BACKENDS) == []


@pytest.mark.parametrize("name", [n for n in EXAMPLES if n.endswith("-sim")])
def test_the_simulators_take_the_simulated_examples_command_lines(name: str) -> None:
    """Each simulator parses what the operator runs it with (`flags.parse` reads what follows
    `python -m <module>`), chat flags included."""
    raw = example(name)
    launch = engine_launch(ModelBackendSpec.model_validate(raw["spec"]), "demo", SETTINGS)
    flags = importlib.import_module(f"{launch.command[2]}.flags")
    flags.parse(launch.command[3:] + launch.args)


@pytest.mark.parametrize("engine", ENGINES)
def test_the_simulators_take_every_chat_flag_of_their_engine(engine: str) -> None:
    chat, expected = FULL_CHAT[engine]
    launch = engine_launch(spec(engine, simulated=True, chat=chat), "demo", SETTINGS)
    assert set(expected) <= set(launch.args)
    flags = importlib.import_module(f"{launch.command[2]}.flags")
    flags.parse(launch.command[3:] + launch.args)
