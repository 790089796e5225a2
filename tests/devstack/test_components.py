"""How `make run` starts its processes (from the engine registry) and learns the ports they
bound (from the line each one logs)."""

from __future__ import annotations

import importlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
import yaml

from switchyard.devstack.components import (
    ADAPTER_LISTENING,
    EMBEDDING_MODELS,
    ENGINES,
    SIM_LISTENING,
    SIM_MODEL,
    EngineOptions,
    adapter_args,
    adapter_env,
    demo_models,
    sim_args,
    write_model_routes,
)
from switchyard.engines import ENGINES as KINDS
from switchyard.engines import Serving, engine_kind

STARTED: dict[str, Any] = {
    "address": "127.0.0.1:41234",
    "engine": "vllm",
    "engine_url": "http://127.0.0.1:8000",  # a port too, but not the adapter's
    "event": "adapter_started",
    "service": "adapter-vllm",
}


@pytest.mark.parametrize(
    "render",
    [
        structlog.processors.JSONRenderer(serializer=orjson.dumps),  # a pipe: `auto` is JSON
        structlog.dev.ConsoleRenderer(colors=False),  # ADAPTER_LOG_FORMAT=console
    ],
    ids=["json", "console"],
)
def test_the_adapter_s_port_is_read_from_its_started_line(render: Any) -> None:
    def line(event: str) -> str:
        rendered = render(None, "info", {**STARTED, "event": event})
        return rendered.decode() if isinstance(rendered, bytes) else str(rendered)

    found = ADAPTER_LISTENING.search(line("adapter_started"))
    assert found is not None, line("adapter_started")
    assert found.group(1) == "41234"
    assert ADAPTER_LISTENING.search(line("adapter_stopping")) is None


def test_a_simulator_s_port_is_read_from_its_listening_line() -> None:
    for line in (
        "2026-12-02 02:24:15,973 INFO switchyard.enginesim enginesim-vllm listening on http://127.0.0.1:39061",
        "2026-12-02 02:24:15,973 INFO switchyard.enginesim tgi-sim switchyard/sim-1b-instruct listening on http://127.0.0.1:39061",
    ):
        found = SIM_LISTENING.search(line)
        assert found is not None, line
        assert found.group(1) == "39061"
    assert SIM_LISTENING.search("loading: not listening for 3.0 s") is None


@pytest.mark.parametrize("engine", ENGINES)
def test_simulators_get_their_engine_s_flags_then_the_simulation_s(engine: str) -> None:
    opts = EngineOptions(max_model_len=2048, max_running=4, max_queued=2, ttft_s=0.5)
    args = sim_args(engine, "127.0.0.1", 0, "demo", opts)
    kind = engine_kind(engine)
    # As the operator runs the engine, less what a ModelBackend has and the stack does not
    # (tensor parallelism), plus seeds honoured everywhere (SGLang needs a flag for that).
    serving = Serving(
        model=SIM_MODEL,
        host="127.0.0.1",
        port=0,
        served_name="demo",
        max_model_len=2048,
        max_running=4,
        max_queued=2,
        seeded=True,
    )
    assert args == [*kind.simulator, *kind.flags(serving), *args[-6:]]
    assert args[-6:] == ["--sim-ttft", "0.5", "--sim-itl", "0.01", "--sim-load-delay", "0.0"]
    assert adapter_args(engine) == [f"switchyard.adapter_{engine}"]


#: What `make run` serves: tools, reasoning where the engine has a parser, images.
DEMO = EngineOptions(tools=True, reasoning=True, images=True)


@pytest.mark.parametrize("features", [False, True], ids=["plain", "demo"])
@pytest.mark.parametrize("engine", ENGINES)
def test_simulators_accept_the_stack_s_command_lines(engine: str, features: bool) -> None:
    opts = EngineOptions(max_model_len=2048, max_running=4, max_queued=2, load_delay_s=1)
    if features:
        opts = replace(opts, tools=True, reasoning=True, images=True)
    args = sim_args(engine, "127.0.0.1", 0, "demo", opts)
    importlib.import_module(f"{args[0]}.flags").parse(args[1:])


@pytest.mark.parametrize(("engine", "expected"), [
    ("vllm", ["--enable-auto-tool-choice", "--tool-call-parser", "hermes",
              "--reasoning-parser", "qwen3"]),
    ("sglang", ["--tool-call-parser", "qwen", "--reasoning-parser", "qwen3"]),
    ("tgi", []),  # TGI serves tools without a parser and has no reasoning parser
])  # fmt: skip
def test_the_demo_models_serve_tools_reasoning_and_images(engine: str, expected: list[str]) -> None:
    plain = sim_args(engine, "127.0.0.1", 0, "demo", EngineOptions())
    demo = sim_args(engine, "127.0.0.1", 0, "demo", DEMO)
    kind = engine_kind(engine)
    engine_flags = demo[len(kind.simulator) : demo.index("--sim-ttft")]
    assert engine_flags == plain[len(kind.simulator) : plain.index("--sim-ttft")] + expected
    assert demo[-1] == "--sim-multimodal"
    assert "--sim-multimodal" not in plain


def test_each_feature_is_its_own_switch() -> None:
    tools = sim_args("vllm", "127.0.0.1", 0, "demo", EngineOptions(tools=True))
    assert "--tool-call-parser" in tools
    assert not {"--reasoning-parser", "--sim-multimodal"} & set(tools)
    reasoning = sim_args("sglang", "127.0.0.1", 0, "demo", EngineOptions(reasoning=True))
    assert "--reasoning-parser" in reasoning
    assert not {"--tool-call-parser", "--sim-multimodal"} & set(reasoning)


def test_an_unknown_engine_has_no_command_line() -> None:
    with pytest.raises(ValueError, match="unknown engine 'llamacpp'"):
        sim_args("llamacpp", "127.0.0.1", 0, "demo", EngineOptions())


#: An embedding model whose vectors may be shortened, as `make run` serves them.
EMBED = EngineOptions(embedding=True, matryoshka=True, embedding_dimensions=256)


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        ("vllm", ["--runner", "pooling", "--convert", "embed",
                  "--hf-overrides", '{"is_matryoshka":true}']),
        ("sglang", ["--is-embedding", "--json-model-override-args", '{"is_matryoshka":true}']),
    ],
)  # fmt: skip
def test_an_embedding_model_gets_its_engine_s_flags_and_its_size(
    engine: str, expected: list[str]
) -> None:
    plain = sim_args(engine, "127.0.0.1", 0, "demo", EngineOptions())
    embed = sim_args(engine, "127.0.0.1", 0, "demo", EMBED)
    size = ["--sim-embedding-dimensions", "256"]
    assert [arg for arg in embed if arg not in plain] == [*expected, *size]
    assert embed[-2:] == size
    assert "--sim-embedding-dimensions" not in plain


def test_only_the_listed_sizes_are_said_when_there_are_some() -> None:
    opts = replace(EMBED, matryoshka_dimensions=(128, 64))
    args = sim_args("vllm", "127.0.0.1", 0, "demo", opts)
    assert json.loads(args[args.index("--hf-overrides") + 1]) == {
        "matryoshka_dimensions": [128, 64]
    }


def test_tgi_has_no_embedding_model() -> None:
    with pytest.raises(ValueError, match="TGI serves no embeddings"):
        sim_args("tgi", "127.0.0.1", 0, "demo", EMBED)


def test_an_embedding_model_takes_no_generation_options() -> None:
    with pytest.raises(ValueError, match="an embedding model generates nothing: tool_call_parser"):
        sim_args("vllm", "127.0.0.1", 0, "demo", replace(EMBED, tools=True))


@pytest.mark.parametrize("engine", list(EMBEDDING_MODELS))
def test_simulators_accept_an_embedding_model_s_command_line(engine: str) -> None:
    for opts in (EMBED, replace(EMBED, matryoshka=False, matryoshka_dimensions=(64, 128))):
        args = sim_args(engine, "127.0.0.1", 0, "demo", opts)
        importlib.import_module(f"{args[0]}.flags").parse(args[1:])


def test_make_run_serves_an_embedding_model_on_every_engine_that_has_them() -> None:
    served = [k.name for k in KINDS.values() if k.no_embeddings is None]
    models = demo_models()
    embedding = {m.engine: m.name for m in models if m.options.embedding}
    assert embedding == dict(EMBEDDING_MODELS)
    assert list(embedding) == served
    assert embedding["vllm"] == "demo-embed"
    assert all(m.options.matryoshka for m in models if m.options.embedding)
    assert [m.name for m in models if not m.options.embedding] == [f"demo-{e}" for e in ENGINES]
    names = [m.name for m in models]
    assert len(set(names)) == len(names)
    assert len({m.component for m in models}) == len(models)


def test_each_demo_model_has_its_own_adapter_and_route(tmp_path: Path) -> None:
    env = adapter_env("vllm", "http://127.0.0.1:1", "127.0.0.1", 0, model="demo-embed")
    assert env["ADAPTER_SERVED_MODEL_NAME"] == "demo-embed"
    default = adapter_env("vllm", "http://127.0.0.1:1", "127.0.0.1", 0)
    assert default["ADAPTER_SERVED_MODEL_NAME"] == "demo-vllm"
    routes = tmp_path / "routes.yaml"
    write_model_routes(routes, {"demo-vllm": ("vllm", ["a:1"]), "demo-embed": ("vllm", ["b:2"])})
    assert yaml.safe_load(routes.read_text()) == {"models": [
        {"name": "demo-vllm", "engine": "vllm", "endpoints": ["a:1"]},
        {"name": "demo-embed", "engine": "vllm", "endpoints": ["b:2"]},
    ]}  # fmt: skip
