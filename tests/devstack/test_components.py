"""How `make run` starts its processes (from the engine registry) and learns the ports they
bound (from the line each one logs)."""

from __future__ import annotations

import importlib
from dataclasses import replace
from typing import Any

import orjson
import pytest
import structlog

from switchyard.devstack.components import (
    ADAPTER_LISTENING,
    ENGINES,
    SIM_LISTENING,
    SIM_MODEL,
    EngineOptions,
    adapter_args,
    sim_args,
)
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
