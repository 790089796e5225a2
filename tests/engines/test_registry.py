"""The engine registry: each entry names an adapter and a simulator that exist, and turns the
same serving options into its engine's own flags."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import re

import pytest

from switchyard.adapter.translation import Translation
from switchyard.engines import (
    CHAT_OPTIONS,
    ENGINES,
    GENERATION_ONLY,
    NAMES,
    EngineKind,
    Serving,
    engine_kind,
)

KINDS = list(ENGINES.values())
FULL = Serving(
    model="org/model",
    host="0.0.0.0",
    port=1234,
    served_name="served",
    tensor=2,
    max_model_len=8192,
    max_running=8,
    max_queued=4,
    seeded=True,
    tool_call_parser="hermes",
    reasoning_parser="qwen3",
    chat_template="/templates/chat.jinja",
    max_images_per_prompt=2,
    max_top_logprobs=3,
)


def translation_of(kind: EngineKind) -> type[Translation]:
    module = importlib.import_module(f"{kind.adapter_module}.translation")
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Translation) and value is not Translation
    ]
    assert len(found) == 1, found
    return found[0]


def test_names_are_the_entries_in_order() -> None:
    assert NAMES == ("vllm", "sglang", "tgi")
    assert all(kind.name == name for name, kind in ENGINES.items())


@pytest.mark.parametrize("kind", KINDS, ids=NAMES)
def test_each_engine_has_an_adapter_that_runs_its_translation(kind: EngineKind) -> None:
    assert importlib.util.find_spec(f"{kind.adapter_module}.__main__") is not None
    assert translation_of(kind).engine == kind.name
    assert kind.adapter_component == f"adapter-{kind.name}"


@pytest.mark.parametrize("kind", KINDS, ids=NAMES)
def test_the_adapter_asks_the_route_the_readiness_probe_asks(kind: EngineKind) -> None:
    assert translation_of(kind).health_path == kind.probes.readiness


@pytest.mark.parametrize("kind", KINDS, ids=NAMES)
def test_each_engine_has_a_simulator(kind: EngineKind) -> None:
    module = kind.simulator[0]
    assert module == f"switchyard.enginesim.{kind.name}"
    assert importlib.util.find_spec(f"{module}.__main__") is not None


def test_an_unknown_engine_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"'llamacpp' \(known: vllm, sglang, tgi\)"):
        engine_kind("llamacpp")


@pytest.mark.parametrize("kind", KINDS, ids=NAMES)
def test_every_option_becomes_one_flag_of_each_engine(kind: EngineKind) -> None:
    flags = kind.flags(FULL)
    names = [arg for arg in flags if arg.startswith("--")]
    assert len(names) == len(set(names)), names  # TGI refuses a repeated flag
    assert {"org/model", "0.0.0.0", "1234", "2", "8192"} <= set(flags)


def test_vllm_counts_the_running_requests_in_its_queue_limit() -> None:
    flags = ENGINES["vllm"].flags(FULL)
    assert flags[flags.index("--max-num-seqs") + 1] == "8"
    assert flags[flags.index("--max-num-queued-reqs") + 1] == "12"
    default_running = ENGINES["vllm"].flags(Serving("m", "h", 1, "s", max_queued=4))
    assert default_running[-2:] == ["--max-num-queued-reqs", "260"]  # 256 running by default


def test_tgi_has_one_limit_for_running_and_queued_requests() -> None:
    flags = ENGINES["tgi"].flags(FULL)
    assert flags[flags.index("--max-concurrent-requests") + 1] == "12"
    assert "--max-concurrent-requests" not in ENGINES["tgi"].flags(Serving("m", "h", 1, "s"))


@pytest.mark.parametrize(("length", "expected"), [
    (8192, ["--max-input-tokens", "8191", "--max-total-tokens", "8192"]),
    (1, ["--max-total-tokens", "1"]),
])  # fmt: skip
def test_tgi_leaves_room_for_one_generated_token(length: int, expected: list[str]) -> None:
    flags = ENGINES["tgi"].flags(Serving("m", "h", 1, "s", max_model_len=length))
    assert flags[-len(expected) :] == expected


@pytest.mark.parametrize("kind", KINDS, ids=NAMES)
def test_only_sglang_needs_a_flag_to_honour_seeds(kind: EngineKind) -> None:
    plain = Serving("m", "h", 1, "s")
    seeded = Serving("m", "h", 1, "s", seeded=True)
    extra = [arg for arg in kind.flags(seeded) if arg not in kind.flags(plain)]
    assert extra == (["--enable-deterministic-inference"] if kind.name == "sglang" else [])


#: A value for each chat option (0 for the limits: a limit, not "unset").
CHAT = {
    "tool_call_parser": "hermes",
    "reasoning_parser": "qwen3",
    "chat_template": "/templates/chat.jinja",
    "max_images_per_prompt": 0,
    "max_top_logprobs": 0,
}


def test_chat_options_are_serving_fields() -> None:
    assert set(CHAT) == set(CHAT_OPTIONS) <= {f.name for f in dataclasses.fields(Serving)}
    for kind in KINDS:
        assert set(kind.unsupported) <= set(CHAT_OPTIONS), kind.name
        assert all(why for why in kind.unsupported.values())


@pytest.mark.parametrize("kind", KINDS, ids=NAMES)
@pytest.mark.parametrize("option", CHAT_OPTIONS)
def test_each_chat_option_has_a_flag_unless_the_engine_says_it_has_none(
    kind: EngineKind, option: str
) -> None:
    """An option the engine has no flag for changes nothing here (the CRD refuses it)."""
    plain = Serving("m", "h", 1, "s")
    given = dataclasses.replace(plain, **{option: CHAT[option]})  # type: ignore[arg-type]
    extra = kind.flags(given)[len(kind.flags(plain)) :]
    assert bool(extra) is (option not in kind.unsupported)
    if extra:
        assert str(CHAT[option]) in extra[-1]  # the value follows its flag


@pytest.mark.parametrize(("engine", "expected"), [
    ("vllm", ["--enable-auto-tool-choice", "--tool-call-parser", "hermes",
              "--reasoning-parser", "qwen3", "--chat-template", "/templates/chat.jinja",
              "--limit-mm-per-prompt", '{"image":0}', "--max-logprobs", "0"]),
    ("sglang", ["--tool-call-parser", "hermes", "--reasoning-parser", "qwen3",
                "--chat-template", "/templates/chat.jinja",
                "--limit-mm-data-per-request", '{"image":0}']),
    ("tgi", ["--max-top-n-tokens", "0"]),
])  # fmt: skip
def test_chat_flags_of_each_engine(engine: str, expected: list[str]) -> None:
    """vLLM serves `tool_choice: auto` only with --enable-auto-tool-choice, which it refuses
    without --tool-call-parser; vLLM and SGLang read per-modality limits as a JSON object."""
    kind = ENGINES[engine]
    plain = Serving("m", "h", 1, "s")
    flags = kind.flags(dataclasses.replace(plain, **CHAT))  # type: ignore[arg-type]
    assert flags == kind.flags(plain) + expected


#: What starts each engine that serves embeddings as an embedding model, and the flag that
#: overrides the model's HF config (where both read `is_matryoshka`/`matryoshka_dimensions`:
#: vLLM config/model.py `ModelConfig.is_matryoshka`, SGLang configs/model_config.py).
EMBEDDING = {
    "vllm": (["--runner", "pooling", "--convert", "embed"], "--hf-overrides"),
    "sglang": (["--is-embedding"], "--json-model-override-args"),
}
PLAIN = Serving("m", "h", 1, "s")


def test_the_engines_that_serve_embeddings_are_those_that_can() -> None:
    assert [k.name for k in KINDS if k.no_embeddings is None] == list(EMBEDDING)


@pytest.mark.parametrize("engine", EMBEDDING)
def test_an_embedding_model_gets_its_engine_s_flags(engine: str) -> None:
    kind = ENGINES[engine]
    flags, override = EMBEDDING[engine]
    embed = kind.flags(dataclasses.replace(PLAIN, embedding=True))
    assert [arg for arg in embed if arg not in kind.flags(PLAIN)] == flags
    assert override not in embed  # the model's config is left alone


@pytest.mark.parametrize(
    ("matryoshka", "dimensions", "config"),
    [
        (True, (), {"is_matryoshka": True}),
        (False, (256, 64), {"matryoshka_dimensions": [256, 64]}),
        (True, (64,), {"matryoshka_dimensions": [64]}),
    ],
)
@pytest.mark.parametrize("engine", EMBEDDING)
def test_matryoshka_vectors_are_said_in_the_model_s_config(
    engine: str, matryoshka: bool, dimensions: tuple[int, ...], config: dict[str, object]
) -> None:
    serving = dataclasses.replace(
        PLAIN, embedding=True, matryoshka=matryoshka, matryoshka_dimensions=dimensions
    )
    flags = ENGINES[engine].flags(serving)
    override = EMBEDDING[engine][1]
    assert json.loads(flags[flags.index(override) + 1]) == config


def test_seeds_mean_nothing_to_an_embedding_model() -> None:
    """SGLang's deterministic mode is for sampling, which an embedding model does not do."""
    seeded = dataclasses.replace(PLAIN, seeded=True, embedding=True)
    assert "--enable-deterministic-inference" not in ENGINES["sglang"].flags(seeded)


@pytest.mark.parametrize("kind", [k for k in KINDS if k.no_embeddings], ids=lambda k: k.name)
def test_an_engine_without_embeddings_refuses_an_embedding_model(kind: EngineKind) -> None:
    assert kind.no_embeddings is not None
    with pytest.raises(ValueError, match=re.escape(kind.no_embeddings)):
        kind.flags(dataclasses.replace(PLAIN, embedding=True))


def test_generation_only_options_are_chat_options() -> None:
    assert set(GENERATION_ONLY) <= set(CHAT_OPTIONS)


@pytest.mark.parametrize("option", GENERATION_ONLY)
def test_an_embedding_model_refuses_what_shapes_generated_text(option: str) -> None:
    with pytest.raises(ValueError, match=f"an embedding model generates nothing: {option}"):
        dataclasses.replace(PLAIN, embedding=True, **{option: CHAT[option]})  # type: ignore[arg-type]
    dataclasses.replace(PLAIN, **{option: CHAT[option]})  # type: ignore[arg-type]


def test_matryoshka_is_for_an_embedding_model_and_sizes_are_positive() -> None:
    with pytest.raises(ValueError, match="matryoshka dimensions are for an embedding model"):
        dataclasses.replace(PLAIN, matryoshka=True)
    with pytest.raises(ValueError, match="matryoshka dimensions are for an embedding model"):
        dataclasses.replace(PLAIN, matryoshka_dimensions=(64,))
    with pytest.raises(ValueError, match="at least 1"):
        dataclasses.replace(PLAIN, embedding=True, matryoshka_dimensions=(64, 0))
